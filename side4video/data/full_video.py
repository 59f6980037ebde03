"""Full-video sampling: every frame (or a dense stride) of a video, and batches of variable-length clips.

Used with the full-video clustering assembler (``network.assembler: {type: cluster}``,
``side4video.models.clustering.ClusterAssembler``): the data pipeline decodes up to ``max_frames`` frames of
each video, :func:`collate_full_video` pads a batch to its longest clip and says which frames are real, and
the assembler turns each video into K pseudo-frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

# The "all_in" loader of "No frame left behind" (Liu et al., CVPR'21): stride by video length.
LONG_VIDEO_STRIDES = ((1200, 1), (4048, 2), (8000, 4))  # (at most this many frames, stride); longer: 8
LONGEST_STRIDE = 8


def long_video_stride(num_frames: int) -> int:
    """1 for F <= 1200, 2 for F <= 4048, 4 for F <= 8000, 8 beyond."""
    for limit, stride in LONG_VIDEO_STRIDES:
        if num_frames <= limit:
            return stride
    return LONGEST_STRIDE


def full_video_indices(num_frames: int, max_frames: int | None = 512, stride: int | None = None,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """0-based frame indices of a full-video clip, in time order (int64 ``[n]``, ``1 <= n <= max_frames``).

    1. ``stride``: as given, or (None) the long-video rule :func:`long_video_stride`.
    2. ``idx = offset, offset + stride, ... < F`` with ``offset = 0``, or, with ``rng``, a random phase
       ``offset ~ U{0..min(stride, F) - 1}`` (training jitter; deterministic without ``rng``).
    3. More than ``max_frames`` indices: keep ``max_frames`` of them evenly spread over the whole video,
       ``idx[floor(i * n / max_frames)]`` for ``i < max_frames`` (coverage of the whole video is kept, at a
       coarser stride). ``max_frames=None``: no bound.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be positive, got {max_frames}")
    if stride is None:
        stride = long_video_stride(num_frames)
    if stride < 1:
        raise ValueError(f"stride must be positive, got {stride}")
    offset = int(rng.integers(min(stride, num_frames))) if rng is not None else 0
    indices = np.arange(offset, num_frames, stride, dtype=np.int64)
    if max_frames is not None and len(indices) > max_frames:
        indices = indices[(np.arange(max_frames, dtype=np.int64) * len(indices)) // max_frames]
    return indices


@dataclass(frozen=True)
class FullVideoSampler:
    """A drop-in for :class:`side4video.data.sampling.FrameSampler` in ``VideoDataset``: whole videos.

    ``train`` jitters the stride phase (when ``random_shift``); ``validation`` gives the deterministic clip
    ``[n]`` and ``test`` the same as ``[1, n]`` (full-video evaluation has one temporal view; crops still
    apply). Clip lengths vary by video; batch them with :func:`collate_full_video`. ``frames_per_clip`` (1) is only
    the length of the placeholder
    clip ``VideoDataset`` makes for an unreadable evaluation video.
    """

    max_frames: int = 512
    stride: int | None = None
    random_shift: bool = True
    max_test_clips = 1               # (a class constant: the whole video is the one temporal view)

    @property
    def frames_per_clip(self) -> int:
        return 1

    def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        return full_video_indices(num_frames, self.max_frames, self.stride, rng if self.random_shift else None)

    def validation(self, num_frames: int) -> np.ndarray:
        """Indices ``[n]`` of the validation clip (equal to ``test(num_frames, 1)[0]``)."""
        return full_video_indices(num_frames, self.max_frames, self.stride)

    def test(self, num_frames: int, num_clips: int = 1) -> np.ndarray:
        if num_clips != self.max_test_clips:
            raise ValueError(f"full-video sampling evaluates one clip per video, got num_clips={num_clips}")
        return full_video_indices(num_frames, self.max_frames, self.stride)[None]


def pad_clips(clips: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``[..., n_i, 3, S, S]`` (same leading dims) → zero-padded ``[B, ..., n_max, 3, S, S]`` and a mask
    ``[B, n_max]`` (True = real frame; padding at the end)."""
    if not clips:
        raise ValueError("no clips to pad")
    lengths = [c.shape[-4] for c in clips]
    longest = max(lengths) if length is None else length
    if longest < max(lengths):
        raise ValueError(f"length {longest} is shorter than the longest clip ({max(lengths)})")
    first = clips[0]
    out = first.new_zeros((len(clips),) + tuple(first.shape[:-4]) + (longest,) + tuple(first.shape[-3:]))
    mask = torch.zeros(len(clips), longest, dtype=torch.bool)
    for i, (clip, n) in enumerate(zip(clips, lengths)):
        if clip.shape[:-4] != first.shape[:-4] or clip.shape[-3:] != first.shape[-3:]:
            raise ValueError(f"clip {i} has shape {tuple(clip.shape)}, clip 0 {tuple(first.shape)}: only the "
                             "frame count may differ")
        out[i, ..., :n, :, :, :] = clip
        mask[i, :n] = True
    return out, mask


def collate_full_video(samples: Sequence[dict[str, Any]], *, stack_views: bool = False) -> dict[str, Any]:
    """Batch variable-length full-video samples of ``VideoDataset`` (``frames [V, n_i, 3, S, S]`` uint8).

    ``stack_views=False`` (training, like ``collate_train``): views flattened into the batch, sample-major —
    ``frames [sum V, F_max, 3, S, S]``, ``mask [sum V, F_max]`` bool, ``label [sum V]``, ``index [B]``,
    ``errors`` (concatenated), ``num_samples`` = B. With one view per video (the usual case) that is
    ``frames [B, F_max, 3, S, S]``.

    ``stack_views=True`` (evaluation, like ``collate_eval``): ``frames [B, V, F_max, 3, S, S]``,
    ``mask [B, F_max]`` (all views of a video share its frames), ``label [B]`` (view 0's), ``index [B]``,
    ``video_id``, ``valid [B]``, ``errors``, ``sample_errors``, ``flipped [B, V]``.

    Both also give ``lengths`` (real frames per row of ``mask``). Padding is zeros at the end of each clip.
    A sample's ``frames`` may also be a single view ``[n, 3, S, S]``.
    """
    if not samples:
        raise ValueError("an empty batch")
    clips = [s["frames"] if s["frames"].dim() == 5 else s["frames"][None] for s in samples]
    if stack_views:
        frames, mask = pad_clips(clips)
        batch = dict(frames=frames, mask=mask, lengths=mask.sum(1),
                     label=torch.stack([torch.as_tensor(s["label"]).reshape(-1)[0] for s in samples]),
                     index=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
                     video_id=[s.get("video_id") for s in samples],
                     valid=torch.tensor([bool(s.get("valid", True)) for s in samples], dtype=torch.bool),
                     errors=[error for s in samples for error in s.get("errors", [])],
                     sample_errors=[list(s.get("errors", [])) for s in samples])
        if all("flipped" in s for s in samples):
            batch["flipped"] = torch.stack([torch.as_tensor(s["flipped"], dtype=torch.bool) for s in samples])
        return batch
    views = [view for clip in clips for view in clip]
    frames, mask = pad_clips(views)
    batch = dict(frames=frames, mask=mask, lengths=mask.sum(1),
                 label=torch.cat([torch.as_tensor(s["label"]).reshape(-1) for s in samples]),
                 index=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
                 errors=[error for s in samples for error in s.get("errors", [])],
                 num_samples=len(samples))
    return batch


__all__ = ["LONG_VIDEO_STRIDES", "long_video_stride", "full_video_indices", "FullVideoSampler", "pad_clips",
           "collate_full_video"]
