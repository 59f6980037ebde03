"""Clip transforms: one random draw per clip, applied identically to every frame.

Clips are uint8 tensors ``[N, 3, H, W]`` (N frames). Training augmentation follows the
Side4Video recipe: RandAugment (optional, before resizing) -> scale -> crop -> flip -> grayscale.
Normalisation is left to ``normalize_frames``, run on the training device on whole batches.
Geometry helpers are pure functions so that tests can check boxes directly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from .rand_augment import ClipRandAugment, RandAugmentOp, isolated_global_rngs  # noqa: F401 (re-exported)
from .sampling import is_something_something

# short side (int) or fixed (height, width)
ScaleSize = int | tuple[int, int]
# (top, left, height, width) in pixels
Box = tuple[int, int, int, int]

MULTISCALE_SCALES = (1.0, 0.875, 0.75, 0.66)
TEST_CROP_CHOICES = (1, 3, 5, 10)
THREE_CROP_MODES = ("reference", "full_height")
TRAIN_CROPS = ("random_resized", "multiscale", "center")
# the reference's Something-Something left/right classes, swapped when a training clip is flipped
SOMETHING_FLIP_PAIRS = ((86, 87), (93, 94), (166, 167))


def default_scale_size(input_size: int, dataset: str = "") -> ScaleSize:
    """The scale rule: the resize before cropping, when ``data.scale_size`` is not given.

    (256, 320) [height, width] for Something-Something (``is_something_something``), else short side 256,
    both for a 224 input (the reference's rule) and scaled proportionally for other input sizes:
    ``round(256 * S / 224)`` (and ``round(320 * S / 224)``). The reference itself uses ``input_size`` as the
    short side for a non-224 input on other datasets, and (256, 320) at every input size for Something-Something.
    """
    if is_something_something(dataset):
        return (round(256 * input_size / 224), round(320 * input_size / 224))
    return round(input_size * 256 / 224)


def default_grayscale(dataset: str = "") -> float:
    """The reference's grayscale probability (``GroupRandomGrayscale`` in get_augmentation): 0 for
    Something-Something, 0.2 otherwise."""
    return 0.0 if is_something_something(dataset) else 0.2


def default_flip_pairs(dataset: str = "") -> list[list[int]]:
    """The reference's label swap under horizontal flips (``GroupRandomHorizontalFlip_sth``): the
    Something-Something pairs 86<->87, 93<->94, 166<->167 for an SS dataset, none otherwise."""
    return [list(pair) for pair in SOMETHING_FLIP_PAIRS] if is_something_something(dataset) else []


def resolve_grayscale(grayscale: float | None, dataset: str = "") -> float:
    """``data.grayscale``: None means the reference's default for the dataset; a number is used as given."""
    return default_grayscale(dataset) if grayscale is None else float(grayscale)


def resolve_flip_pairs(flip_pairs: Sequence[Sequence[int]] | None, dataset: str = "") -> list[list[int]]:
    """``data.flip_pairs``: None means the reference's default for the dataset; a list (also []) is used as given."""
    if flip_pairs is None:
        return default_flip_pairs(dataset)
    return [[int(a) for a in pair] for pair in flip_pairs]


def resolve_scale_size(scale_size: int | Sequence[int] | None, input_size: int, dataset: str = "") -> ScaleSize:
    """``data.scale_size`` (None: the scale rule ``default_scale_size``, an int short side, or [H, W]) as a
    ScaleSize. Whether it holds the crop is the config's check (``load_config``)."""
    if scale_size is None:
        return default_scale_size(input_size, dataset)
    if isinstance(scale_size, (int, np.integer)):
        return int(scale_size)
    if len(scale_size) == 2:
        return (int(scale_size[0]), int(scale_size[1]))
    raise ValueError(f"scale size must be an int or [height, width], got {scale_size!r}")


def scaled_shape(height: int, width: int, scale: ScaleSize) -> tuple[int, int]:
    """Frame shape after scaling: an int sets the short side (long side truncated, as torchvision)."""
    if not isinstance(scale, int):
        return scale
    if height <= width:
        return scale, int(scale * width / height)
    return int(scale * height / width), scale


def resize_clip(frames: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with antialiasing (like PIL's), skipped when the shape already matches."""
    if tuple(frames.shape[-2:]) == tuple(shape):
        return frames
    return TF.resize(frames, list(shape), antialias=True)


def crop_resize(frames: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    top, left, height, width = box
    return resize_clip(frames[..., top:top + height, left:left + width], (size, size))


def center_box(height: int, width: int, crop_height: int, crop_width: int | None = None) -> Box:
    crop_width = crop_height if crop_width is None else crop_width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def random_resized_box(height: int, width: int, area_range: Sequence[float], ratio_range: Sequence[float],
                       rng: np.random.Generator) -> Box:
    """Inception-style crop: area fraction uniform in ``area_range``, aspect ratio (w/h) log-uniform in
    ``ratio_range``; 10 tries, then the largest centred box with a clamped aspect ratio."""
    area = height * width
    log_ratio = (math.log(ratio_range[0]), math.log(ratio_range[1]))
    for _ in range(10):
        target_area = area * rng.uniform(area_range[0], area_range[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(height - crop_h + 1))
            left = int(rng.integers(width - crop_w + 1))
            return top, left, crop_h, crop_w
    aspect = width / height
    if aspect < min(ratio_range):
        crop_w, crop_h = width, int(round(width / min(ratio_range)))
    elif aspect > max(ratio_range):
        crop_h, crop_w = height, int(round(height * max(ratio_range)))
    else:
        crop_h, crop_w = height, width
    return center_box(height, width, crop_h, crop_w)


def multiscale_box(height: int, width: int, input_size: int, rng: np.random.Generator,
                   scales: Sequence[float] = MULTISCALE_SCALES, max_distort: int = 1) -> Box:
    """TSN multi-scale crop: side lengths from ``scales`` x short side (snapped to ``input_size`` when
    within 3 px), width and height scale indices at most ``max_distort`` apart, placed at one of 13
    fixed positions (corners, centre, edge middles and quarter points)."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [input_size if abs(s - input_size) < 3 else s for s in sizes]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    step_y, step_x = (height - crop_h) // 4, (width - crop_w) // 4
    grid = ((0, 0), (0, 4), (4, 0), (4, 4), (2, 2),
            (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3))  # (row, column) in quarters
    row, column = grid[int(rng.integers(len(grid)))]
    return row * step_y, column * step_x, crop_h, crop_w


def to_grayscale(frames: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (PIL's 'L' weights), repeated over the 3 channels."""
    weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(3, 1, 1)
    luma = ((frames.to(torch.int32) * weights).sum(dim=-3, keepdim=True) + 500) // 1000
    return luma.to(torch.uint8).expand_as(frames).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class ClipAugmentParams:
    """Every random choice of one augmented view of a clip (drawn by :meth:`TrainAugmentation.draw`), so that a
    loader worker can draw them and the training device apply them (``data.augment_on: device``).

    ``scaled``: the frame shape after the scale step; ``box``: the crop ``(top, left, height, width)`` in that
    shape, resized to ``size x size``; ``rand_augment_seed``: the seed of timm's draws (None: no RandAugment) and
    ``rand_augment``: the operations it gives (recorded only for the device); ``fill``: RandAugment's fill colour.
    """
    scaled: tuple[int, int]
    box: Box
    size: int
    flipped: bool
    grayscale: bool
    rand_augment_seed: int | None = None
    rand_augment: tuple[RandAugmentOp, ...] = ()
    fill: tuple[int, int, int] = (0, 0, 0)


class TrainAugmentation:
    """One augmented view of a clip: [RandAugment] -> scale -> crop -> flip -> grayscale.

    Returns ``(frames [N, 3, S, S], flipped)``; the caller swaps left/right labels of flipped views.
    All random choices come from ``rng``, one draw per clip.
    """

    def __init__(self, input_size: int, scale: ScaleSize, *, crop: str = "random_resized",
                 crop_area: Sequence[float] = (0.08, 1.0), crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
                 flip: bool = True, grayscale: float = 0.0, rand_augment: ClipRandAugment | None = None):
        if crop not in TRAIN_CROPS:
            raise ValueError(f"data.train_crop must be one of {', '.join(TRAIN_CROPS)}, got {crop!r}")
        self.input_size = input_size
        self.scale = scale
        self.crop = crop
        self.crop_area = tuple(crop_area)
        self.crop_ratio = tuple(crop_ratio)
        self.flip = flip
        self.grayscale = grayscale
        self.rand_augment = rand_augment

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> Box:
        if self.crop == "random_resized":
            return random_resized_box(height, width, self.crop_area, self.crop_ratio, rng)
        if self.crop == "multiscale":
            return multiscale_box(height, width, self.input_size, rng)
        return center_box(height, width, self.input_size)

    def draw(self, height: int, width: int, rng: np.random.Generator, *,
             record_ops: bool = False) -> ClipAugmentParams:
        """The random choices for a clip of ``height x width`` frames, drawn from ``rng`` in a fixed order
        (RandAugment's seed, crop, flip, grayscale). ``record_ops``: also list the RandAugment operations (for
        the device; the workers run timm's from the seed)."""
        seed = int(rng.integers(2 ** 32)) if self.rand_augment is not None else None
        scaled = scaled_shape(height, width, self.scale)
        box = self.crop_box(*scaled, rng)
        flipped = bool(self.flip and rng.random() < 0.5)
        gray = bool(self.grayscale > 0 and rng.random() < self.grayscale)
        ops: tuple[RandAugmentOp, ...] = ()
        fill = (0, 0, 0)
        if self.rand_augment is not None:
            fill = self.rand_augment.fill
            if record_ops:
                ops = self.rand_augment.draw(seed)
        return ClipAugmentParams(scaled=scaled, box=box, size=self.input_size, flipped=flipped, grayscale=gray,
                                 rand_augment_seed=seed, rand_augment=ops, fill=fill)

    def apply(self, frames: torch.Tensor, params: ClipAugmentParams) -> torch.Tensor:
        """The view ``params`` describes, in this process (the workers' placement): timm's PIL RandAugment."""
        if params.rand_augment_seed is not None and self.rand_augment is not None:
            frames = self.rand_augment(frames, seed=params.rand_augment_seed)
        frames = crop_resize(resize_clip(frames, params.scaled), params.box, params.size)
        if params.flipped:
            frames = frames.flip(-1)
        if params.grayscale:
            frames = to_grayscale(frames)
        return frames

    def __call__(self, frames: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, bool]:
        params = self.draw(frames.shape[-2], frames.shape[-1], rng)
        return self.apply(frames, params), params.flipped


def torchvision_center_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """``(top, left)`` of torchvision's CenterCrop: ``int(round((H - S) / 2.0))`` (Python's round: half to even)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def fixed_offsets(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """``(top, left)`` of the reference's 5 fixed crops (``fill_fix_offset(False, ...)``), with
    ``w = (W - S) // 4``, ``h = (H - S) // 4``: top-left (0, 0), top-right (0, 4w), bottom-left (4h, 0),
    bottom-right (4h, 4w), centre (2h, 2w). Not ``W - S`` nor ``(W - S) // 2`` unless W - S divides by 4."""
    w, h = (width - size) // 4, (height - size) // 4
    return [(0, 0), (0, 4 * w), (4 * h, 0), (4 * h, 4 * w), (2 * h, 2 * w)]


def full_res_offsets(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """``(top, left)`` of the reference's 3 crops (``GroupFullResSample``), with ``w = (W - S) // 4``,
    ``h = (H - S) // 4``: left (2h, 0), right (2h, 4w), centre (2h, 2w), in that order, for every
    orientation (portrait frames get the same formula)."""
    w, h = (width - size) // 4, (height - size) // 4
    return [(2 * h, 0), (2 * h, 4 * w), (2 * h, 2 * w)]


def eval_crop_geometry(height: int, width: int, input_size: int, scale: ScaleSize, num_crops: int,
                       three_crop: str = "reference") -> tuple[tuple[int, int], list[tuple[int, int, bool]]]:
    """Where the test views of an ``height x width`` frame are cut, as ``(scaled (h, w), [(top, left, flipped)])``.

    Every view is an ``S x S`` square, S = input_size, cut from the frame resized to the scaled shape
    (the reference's test_vision.py views, GroupScale then the crops of datasets/transforms.py):

    * 1 crop: resize by the scale rule, torchvision centre crop ``top = int(round((h - S) / 2.0))``,
      ``left = int(round((w - S) / 2.0))``.
    * 3 crops, ``three_crop='reference'``: resize by the scale rule; with ``w4 = (w - S) // 4`` and
      ``h4 = (h - S) // 4`` the crops (top, left) are (2 h4, 0), (2 h4, 4 w4), (2 h4, 2 w4): left, right, centre
      (``GroupFullResSample``, no flips), landscape or portrait alike.
    * 3 crops, ``three_crop='full_height'``: resize the short side to S (aspect kept, long side truncated),
      crops at the start, middle ``(long - S) // 2`` and end ``long - S`` of the long side: left/centre/right for
      landscape frames, top/centre/bottom for portrait ones (TSM "full-res"; no flips).
    * 5 crops: resize by the scale rule, then (0, 0), (0, 4 w4), (4 h4, 0), (4 h4, 4 w4), (2 h4, 2 w4):
      top-left, top-right, bottom-left, bottom-right, centre (``GroupOverSample``, ``fill_fix_offset(False)``).
    * 10 crops: those 5, then the same 5 mirrored horizontally (the reference interleaves each crop with its
      mirror; the order does not change averaged scores).
    """
    if num_crops not in TEST_CROP_CHOICES:
        raise ValueError(f"test_crops must be one of {TEST_CROP_CHOICES}, got {num_crops}")
    if three_crop not in THREE_CROP_MODES:
        raise ValueError(f"three_crop must be one of {THREE_CROP_MODES}, got {three_crop!r}")
    size = input_size
    if num_crops == 3 and three_crop == "full_height":
        h, w = scaled_shape(height, width, size)
        if w >= h:
            positions = [(0, left) for left in (0, (w - size) // 2, w - size)]
        else:
            positions = [(top, 0) for top in (0, (h - size) // 2, h - size)]
        return (h, w), [(top, left, False) for top, left in positions]
    h, w = scaled_shape(height, width, scale)
    if min(h, w) < size:
        raise ValueError(f"scaled frame {h}x{w} is smaller than the {size}x{size} crop")
    if num_crops == 1:
        return (h, w), [(*torchvision_center_offsets(h, w, size), False)]
    if num_crops == 3:
        return (h, w), [(top, left, False) for top, left in full_res_offsets(h, w, size)]
    corners = fixed_offsets(h, w, size)
    views = [(top, left, False) for top, left in corners]
    if num_crops == 10:
        views += [(top, left, True) for top, left in corners]
    return (h, w), views


def distinct_view_count(clip_indices: np.ndarray, crop_geometry: Sequence[tuple[int, int, bool]]) -> int:
    """How many of a video's ``clips x crops`` views differ. A view is fixed by its clip's frame indices and its
    crop (``(top, left, flipped)`` of an ``S x S`` box in the scaled frame, from ``eval_crop_geometry``); views
    are every clip with every crop, so the distinct ones are the distinct clips times the distinct crops. Crops
    coincide when the scaled frame is barely larger than the crop, clips when the video is short."""
    clips = {tuple(row) for row in np.asarray(clip_indices).reshape(len(clip_indices), -1).tolist()}
    return len(clips) * len(set(crop_geometry))


class EvalViews:
    """The deterministic spatial views of a clip for validation/testing (see ``eval_crop_geometry``)."""

    def __init__(self, input_size: int, scale: ScaleSize, num_crops: int = 1, three_crop: str = "reference"):
        if num_crops not in TEST_CROP_CHOICES:
            raise ValueError(f"test_crops must be one of {TEST_CROP_CHOICES}, got {num_crops}")
        if three_crop not in THREE_CROP_MODES:
            raise ValueError(f"three_crop must be one of {THREE_CROP_MODES}, got {three_crop!r}")
        self.input_size = input_size
        self.scale = scale
        self.num_crops = num_crops
        self.three_crop = three_crop

    def geometry(self, height: int, width: int) -> list[tuple[int, int, bool]]:
        """The crops ``(top, left, flipped)`` this transform takes from frames of ``height x width``."""
        return eval_crop_geometry(height, width, self.input_size, self.scale, self.num_crops, self.three_crop)[1]

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[bool]]:
        """``frames [N, 3, H, W]`` -> ``(views [num_crops, N, 3, S, S], flipped per view)``."""
        shape, geometry = eval_crop_geometry(frames.shape[-2], frames.shape[-1], self.input_size,
                                             self.scale, self.num_crops, self.three_crop)
        frames = resize_clip(frames, shape)
        size = self.input_size
        views = []
        for top, left, flipped in geometry:
            view = frames[..., top:top + size, left:left + size]
            views.append(view.flip(-1) if flipped else view)
        return torch.stack(views), [flipped for _, _, flipped in geometry]


def normalize_frames(frames: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                     std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 frames ``[..., 3, H, W]`` (any device) -> float32 ``(x / 255 - mean) / std`` per channel."""
    if frames.dtype != torch.uint8:
        raise TypeError(f"normalize_frames expects uint8 frames, got {frames.dtype}")
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"expected frames shaped [..., 3, H, W], got {tuple(frames.shape)}")
    # (x / 255 - m) / s == (x - 255 m) / (255 s): one subtraction and one division on the whole batch
    mean = torch.as_tensor(mean, dtype=torch.float32, device=frames.device).view(3, 1, 1) * 255
    std = torch.as_tensor(std, dtype=torch.float32, device=frames.device).view(3, 1, 1) * 255
    return frames.to(torch.float32).sub_(mean).div_(std)
