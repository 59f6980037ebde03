"""RandAugment for clips, in two places: timm's PIL operations per frame in a loader worker, or the same operations
as batched tensor operations on the training device (``data.augment_on: device``).

The one home of the timm adapter. timm draws a clip's operations (which ones, applied or skipped, magnitude noise,
sign) from Python's and NumPy's global generators; :meth:`ClipRandAugment.draw` lets timm's own RandAugment make
those draws and records each operation it would run (its function and arguments) instead of running it, so both
placements apply exactly the operations timm chose for the clip's seed. What the recorder relies on beyond timm's
``rand_augment_transform`` is the ``ops`` list of the returned ``RandAugment`` and each op's ``aug_fn`` (tested in
tests/data/test_device_augment.py, so a timm release that renames them fails there, not silently).

Tensor operations (:func:`apply_rand_augment`) take uint8 clips ``[G, N, 3, H, W]`` with one argument per clip, so
a whole batch of clips runs each kind of operation once. Each reproduces the PIL operation timm calls, rounding
included; the tests state the tolerance per operation (exact for the look-up operations, within one level where
float arithmetic differs from PIL's: blends and the bicubic geometric operations).
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms.v2 import functional as TF


class RandAugmentOp(NamedTuple):
    """One operation timm applies: its function's name (``rotate``, ``color``, ...) and its level arguments."""
    name: str
    args: tuple[float | int, ...]


@contextlib.contextmanager
def isolated_global_rngs(seed: int) -> Iterator[None]:
    """Seed Python's and NumPy's global RNGs for a block, then give the caller back its own states."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class _Recorder:
    """Stands in for one timm operation function: remembers the call, leaves the image alone."""

    def __init__(self, name: str, log: list[RandAugmentOp]):
        self.name, self.log = name, log

    def __call__(self, image, *args, **kwargs):
        self.log.append(RandAugmentOp(self.name, tuple(args)))   # as timm passes them (posterize takes an int)
        return image


class ClipRandAugment:
    """timm RandAugment with the same operations and magnitudes on every frame of a clip.

    Called on frames (workers), it runs timm's PIL operations: the global ``random``/``numpy.random`` states are
    seeded per clip and rewound to the same point before each frame, inside ``isolated_global_rngs``.
    :meth:`draw` gives the operations of a seed without running them (device placement).
    """

    def __init__(self, policy: str, translate_const: int, mean: Sequence[float]):
        self.fill = tuple(round(255 * m) for m in mean)
        hparams = dict(translate_const=translate_const, img_mean=self.fill, interpolation=Image.BICUBIC)
        self.policy = policy
        self._transform = rand_augment_transform(policy, hparams)
        # a second transform of the same policy whose operation functions only record their calls
        self._recorded: list[RandAugmentOp] = []
        self._recorder = rand_augment_transform(policy, hparams)
        for op in self._recorder.ops:
            op.aug_fn = _Recorder(op.aug_fn.__name__, self._recorded)

    def __call__(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        images = frames.permute(0, 2, 3, 1).numpy()
        outputs = []
        with isolated_global_rngs(seed):
            python_state, numpy_state = random.getstate(), np.random.get_state()
            for image in images:
                random.setstate(python_state)
                np.random.set_state(numpy_state)
                outputs.append(np.asarray(self._transform(Image.fromarray(image))))
        return torch.from_numpy(np.stack(outputs)).permute(0, 3, 1, 2)

    def draw(self, seed: int) -> tuple[RandAugmentOp, ...]:
        """The operations timm runs on a clip drawn with ``seed``, in order (skipped ones left out)."""
        self._recorded.clear()
        with isolated_global_rngs(seed):
            self._recorder(Image.new("RGB", (1, 1)))
        return tuple(self._recorded)


# -- tensor operations: clips uint8 [G, N, 3, H, W], one argument per clip ------------------------------------------
def _per_clip(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, factor)``: ``d + f (i - d)`` in float, clipped, truncated."""
    degenerate = degenerate.to(torch.float32)
    out = image.to(torch.float32).sub_(degenerate).mul_(_per_clip(factor.to(torch.float32))).add_(degenerate)
    return out.clamp_(0, 255).to(torch.uint8)


def _luma(clips: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L conversion, in its fixed point: ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``; [..., 1, H, W]."""
    channels = clips.to(torch.int32).unbind(dim=-3)
    luma = channels[0] * 19595 + channels[1] * 38470 + channels[2] * 7471 + 32768
    return (luma >> 16).to(torch.uint8).unsqueeze(-3)


def auto_contrast(clips: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast: each frame's channels stretched from [min, max] to [0, 255] (truncated); a flat
    channel kept."""
    low = clips.amin(dim=(-2, -1), keepdim=True).to(torch.float32)
    high = clips.amax(dim=(-2, -1), keepdim=True).to(torch.float32)
    scale = 255.0 / (high - low).clamp(min=1)
    out = clips.to(torch.float32).sub_(low).mul_(scale).clamp_(0, 255).to(torch.uint8)
    return torch.where(high > low, out, clips)


def equalize(clips: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize per frame and channel (torchvision implements PIL's look-up table)."""
    return TF.equalize(clips)


def invert(clips: torch.Tensor) -> torch.Tensor:
    return 255 - clips


def posterize(clips: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """ImageOps.posterize: keep the top ``bits`` bits (8 or more: unchanged, as timm)."""
    bits = bits.to(torch.int32).clamp(0, 8)
    mask = (255 - ((1 << (8 - bits)) - 1)).to(torch.uint8)
    return clips & _per_clip(mask)


def solarize(clips: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """ImageOps.solarize: values at or above the threshold inverted."""
    above = clips.to(torch.int32) >= _per_clip(threshold.to(torch.int32))
    return torch.where(above, 255 - clips, clips)


def solarize_add(clips: torch.Tensor, add: torch.Tensor, threshold: int = 128) -> torch.Tensor:
    """timm's solarize_add: values below the threshold raised by ``add`` (capped at 255)."""
    raised = (clips.to(torch.int32) + _per_clip(add.to(torch.int32))).clamp_(max=255).to(torch.uint8)
    return torch.where(clips < threshold, raised, clips)


def color(clips: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color: blend from the grey image."""
    return _blend(_luma(clips), clips, factor)


def contrast(clips: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast: blend from a flat image at each frame's grey mean (rounded)."""
    mean = (_luma(clips).to(torch.float64).mean(dim=(-3, -2, -1), keepdim=True) + 0.5).floor()
    return _blend(mean.to(torch.float32), clips, factor)


def brightness(clips: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness: blend from black."""
    return clips.to(torch.float32).mul_(_per_clip(factor.to(torch.float32))).clamp_(0, 255).to(torch.uint8)


def sharpness(clips: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend from PIL's SMOOTH filter (3x3, centre 5, others 1, /13, rounded), whose
    border pixels stay as they are."""
    kernel = torch.ones(3, 1, 3, 3, dtype=torch.float32, device=clips.device)
    kernel[:, :, 1, 1] = 5
    frames = clips.flatten(0, 1)
    smooth = F.conv2d(frames.to(torch.float32), kernel / 13, groups=3)
    degenerate = frames.clone()
    degenerate[..., 1:-1, 1:-1] = smooth.add_(0.5).clamp_(0, 255).to(torch.uint8)
    return _blend(degenerate.view_as(clips), clips, factor)


def _cubic_weights(offset: torch.Tensor) -> torch.Tensor:
    """PIL's bicubic transform weights of the 4 neighbours at fractional offset d (its a = -1 cubic): [4, ...]."""
    d, d2 = offset, offset * offset
    d3 = d2 * offset
    return torch.stack([-d + 2 * d2 - d3, 1 - 2 * d2 + d3, d + d2 - d3, -d2 + d3])


def affine(clips: torch.Tensor, matrices: torch.Tensor, fill: Sequence[int]) -> torch.Tensor:
    """PIL's ``Image.transform(size, AFFINE, (a, b, c, d, e, f), BICUBIC, fillcolor)`` on every frame of each clip:
    the output pixel centred at (x + 0.5, y + 0.5) samples the input at ``(a x' + b y' + c, d x' + e y' + f)`` with
    ``(x', y') = (x + 0.5, y + 0.5)``; points outside the frame take ``fill``; inside, PIL's cubic (a = -1) over
    the 4 x 4 neighbours, clamped at the border, truncated to uint8. ``matrices``: [G, 6], one per clip (the
    sampling positions and weights are computed once per clip and used for all its frames and channels)."""
    count, frames, channels, height, width = clips.shape
    device = clips.device
    a, b, c, d, e, f = (v.view(-1, 1, 1) for v in matrices.to(device=device, dtype=torch.float64).unbind(dim=1))
    ys = torch.arange(height, device=device, dtype=torch.float64).view(1, -1, 1) + 0.5
    xs = torch.arange(width, device=device, dtype=torch.float64).view(1, 1, -1) + 0.5
    x_in = (a * xs + b * ys + c).view(count, -1)                      # [G, H*W], input pixel coordinates
    y_in = (d * xs + e * ys + f).view(count, -1)
    inside = (x_in >= 0) & (x_in < width) & (y_in >= 0) & (y_in < height)
    x_in, y_in = x_in - 0.5, y_in - 0.5                              # pixel centres at integers
    x0, y0 = x_in.floor(), y_in.floor()
    weight_x = _cubic_weights((x_in - x0).to(torch.float32))          # [4, G, H*W]
    weight_y = _cubic_weights((y_in - y0).to(torch.float32))
    columns = [(x0.long() + tap).clamp_(0, width - 1) for tap in range(-1, 3)]
    rows = [(y0.long() + tap).clamp_(0, height - 1) * width for tap in range(-1, 3)]
    flat = clips.reshape(count, frames * channels, height * width)
    out = torch.zeros(count, frames * channels, height * width, dtype=torch.float32, device=device)
    # a shear or a translation by whole pixels along one axis leaves offsets 0 there, whose weights are (0, 1, 0, 0):
    # skipping the taps without weight makes those operations 4 gathers instead of 16
    used_x = [i for i in range(4) if bool(weight_x[i].any())]
    used_y = [j for j in range(4) if bool(weight_y[j].any())]
    for j in used_y:
        for i in used_x:
            index = (rows[j] + columns[i]).unsqueeze(1).expand(-1, frames * channels, -1)
            weight = (weight_y[j] * weight_x[i]).unsqueeze(1)
            out.addcmul_(flat.gather(2, index).to(torch.float32), weight)
    fill_value = torch.tensor(fill, dtype=torch.float32, device=device).repeat(frames).view(1, -1, 1)
    out = torch.where(inside.unsqueeze(1), out, fill_value)
    return out.clamp_(0, 255).to(torch.uint8).view_as(clips)


def rotation_matrices(degrees: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL's ``Image.rotate(degrees)`` (counter-clockwise about the frame's centre) as affine coefficients [G, 6]."""
    angle = -torch.deg2rad(degrees.to(torch.float64))
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2.0, height / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return torch.stack([cos, sin, c, -sin, cos, f], dim=1)


def _geometric_matrices(name: str, value: torch.Tensor, height: int, width: int) -> torch.Tensor:
    one, zero = torch.ones_like(value, dtype=torch.float64), torch.zeros_like(value, dtype=torch.float64)
    value = value.to(torch.float64)
    if name == "rotate":
        return rotation_matrices(value, height, width)
    if name == "shear_x":
        return torch.stack([one, value, zero, zero, one, zero], dim=1)
    if name == "shear_y":
        return torch.stack([one, zero, zero, value, one, zero], dim=1)
    if name == "translate_x_rel":
        return torch.stack([one, zero, value * width, zero, one, zero], dim=1)
    if name == "translate_y_rel":
        return torch.stack([one, zero, zero, zero, one, value * height], dim=1)
    raise KeyError(name)


GEOMETRIC = frozenset({"rotate", "shear_x", "shear_y", "translate_x_rel", "translate_y_rel"})
_NO_ARGUMENT = {"auto_contrast": auto_contrast, "equalize": equalize, "invert": invert}
_ONE_ARGUMENT = {"posterize": posterize, "solarize": solarize, "solarize_add": solarize_add, "color": color,
                 "contrast": contrast, "brightness": brightness, "sharpness": sharpness}
SUPPORTED = frozenset(GEOMETRIC | _NO_ARGUMENT.keys() | _ONE_ARGUMENT.keys())


def apply_op(clips: torch.Tensor, name: str, value: torch.Tensor, fill: Sequence[int]) -> torch.Tensor:
    """One timm operation ``name`` on clips uint8 [G, N, 3, H, W], one argument per clip (``value`` [G])."""
    if name in _NO_ARGUMENT:
        return _NO_ARGUMENT[name](clips)
    value = value.to(clips.device)
    if name in _ONE_ARGUMENT:
        return _ONE_ARGUMENT[name](clips, value)
    if name in GEOMETRIC:
        return affine(clips, _geometric_matrices(name, value, clips.shape[-2], clips.shape[-1]), fill)
    raise ValueError(f"RandAugment operation {name!r} has no tensor version (supported: "
                     f"{', '.join(sorted(SUPPORTED))})")


def apply_rand_augment(clips: torch.Tensor, ops: Sequence[Sequence[RandAugmentOp]],
                       fill: Sequence[int]) -> torch.Tensor:
    """Each clip's operations, in order, on clips uint8 ``[G, N, 3, H, W]`` (one shape): at each position of the
    operation lists, every kind of operation runs once on all the clips that drew it."""
    if len(ops) != clips.shape[0]:
        raise ValueError(f"{len(ops)} operation lists for {clips.shape[0]} clips")
    out = clips.clone()
    for position in range(max((len(clip_ops) for clip_ops in ops), default=0)):
        by_name: dict[str, list[tuple[int, float]]] = {}
        for clip, clip_ops in enumerate(ops):
            if position < len(clip_ops):
                op = clip_ops[position]
                by_name.setdefault(op.name, []).append((clip, op.args[0] if op.args else 0.0))
        for name, chosen in by_name.items():
            index = torch.tensor([clip for clip, _ in chosen], device=clips.device)
            value = torch.tensor([v for _, v in chosen], dtype=torch.float64)
            out[index] = apply_op(out[index], name, value, fill)
    return out


__all__ = ["RandAugmentOp", "ClipRandAugment", "isolated_global_rngs", "apply_rand_augment", "apply_op", "affine",
           "rotation_matrices", "SUPPORTED", "GEOMETRIC"]
