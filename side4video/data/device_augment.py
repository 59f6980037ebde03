"""Training augmentation on the training device, batched (``data.augment_on: device``).

Loader workers only decode (at the decoder's cheapest size that covers the scaled frame) and draw each view's
random choices (:class:`~side4video.data.transforms.ClipAugmentParams`, from the sample's own ``(seed, epoch,
index)`` generator, as the workers' placement does); the training process applies them here to the whole batch:

    RandAugment (each kind of operation once for all the clips that drew it) -> scale -> crop and resize
    -> flip -> grayscale

with the same tensor functions as the workers' path for the geometry (bit-identical for frames decoded at their
stored size) and tensor versions of timm's operations (``side4video.data.rand_augment``). The flip's label swap
was done by the worker, which knew the label. Normalisation follows in the training step.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from .rand_augment import apply_rand_augment
from .transforms import ClipAugmentParams, crop_resize, resize_clip, to_grayscale

AUGMENT_PLACEMENTS = ("auto", "workers", "device")


def resolve_augment_on(augment_on: str, device_type: str | None = None) -> str:
    """``data.augment_on`` as ``workers`` or ``device``: ``auto`` is the device when training on a GPU (whose
    batched augmentation costs a small fraction of its forward pass) and the workers on a CPU, where both sit on
    the same cores and the workers run in parallel with the step."""
    if augment_on not in AUGMENT_PLACEMENTS:
        raise ValueError(f"data.augment_on must be one of {', '.join(AUGMENT_PLACEMENTS)}, got {augment_on!r}")
    if augment_on != "auto":
        return augment_on
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return "device" if device_type == "cuda" else "workers"


def augment_views(clips: Sequence[torch.Tensor], views: Sequence[Sequence[ClipAugmentParams]],
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The augmented views of decoded clips, on ``device``.

    ``clips[i]``: uint8 ``[n, 3, h, w]`` (sizes may differ between clips), ``views[i]``: its views' parameters.
    Returns uint8 ``[sum of views, n, 3, S, S]``, sample-major, as ``collate_train`` stacks the workers' views.
    """
    if len(clips) != len(views):
        raise ValueError(f"{len(clips)} clips but {len(views)} lists of view parameters")
    device = torch.device(device) if device is not None else clips[0].device
    on_device = [clip.to(device, non_blocking=True) for clip in clips]
    flat = [(clip, params) for clip, clip_views in zip(on_device, views) for params in clip_views]
    if not flat:
        raise ValueError("no views to augment")
    # views that share the decoded shape and the scaled shape go through each step together
    groups: dict[tuple, list[int]] = {}
    for position, (clip, params) in enumerate(flat):
        groups.setdefault((tuple(clip.shape), params.scaled), []).append(position)
    size = flat[0][1].size
    out = torch.empty(len(flat), *flat[0][0].shape[:2], size, size, dtype=torch.uint8, device=device)
    for (_, scaled), positions in groups.items():
        group = torch.stack([flat[p][0] for p in positions])                    # [G, n, 3, h, w]
        params = [flat[p][1] for p in positions]
        if any(p.rand_augment for p in params):
            group = apply_rand_augment(group, [p.rand_augment for p in params], params[0].fill)
        group = resize_clip(group.flatten(0, 1), scaled).unflatten(0, group.shape[:2])
        for p, clip, view in zip(positions, group, params):
            out[p] = crop_resize(clip, view.box, view.size)
    flipped = torch.tensor([params.flipped for _, params in flat], device=device)
    if flipped.any():
        out[flipped] = out[flipped].flip(-1)
    gray = torch.tensor([params.grayscale for _, params in flat], device=device)
    if gray.any():
        chosen = out[gray]
        out[gray] = to_grayscale(chosen.flatten(0, 1)).unflatten(0, chosen.shape[:2])
    return out


def batch_frames(raw: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    """A training batch's uint8 frames on ``device``: the workers' augmented views as they are, or (a batch whose
    samples carry ``augment``) the decoded clips augmented here."""
    if "augment" in raw:
        return augment_views(raw["frames"], raw["augment"], device)
    return raw["frames"].to(device, non_blocking=True)


__all__ = ["AUGMENT_PLACEMENTS", "resolve_augment_on", "augment_views", "batch_frames"]
