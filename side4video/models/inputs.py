"""``SideInputs``: what the frozen backbone hands to a trainable model (side network or baseline head).

Produced once per batch by a clip assembler (``models/assembly.py``): by default the frozen backbone tapped on
the sampled frames; with full-video clustering, K pseudo-frames averaged from every frame of the video.
Training, evaluation, prediction, feature extraction and the benchmarks all go through it, so "tap the
backbone, then run the model" is written once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SideInputs:
    """Frames and frozen-backbone features of a batch of clips.

    Attributes:
        frames: normalised pixels ``[B, T, 3, H, W]`` (the side network's stem reads them).
        cls_tokens: per tapped layer, the class token ``[B*T, 1, W]`` (rows frame-major: ``b * T + t``).
        patch_tokens: per tapped layer, the patch tokens ``[B*T, N, W]``.
        layers: 0-based indices of the tapped backbone layers, ascending.
        embedding: the backbone's final image embedding ``[B*T, E]`` (what open_clip's ``encode_image`` gives),
            or None when the model does not need it.
        num_frames: T, frames (or pseudo-frames) per clip.

    The token tensors are in the backbone's precision (``network.backbone_precision``) and never require grad.
    """
    frames: torch.Tensor
    cls_tokens: list[torch.Tensor]
    patch_tokens: list[torch.Tensor]
    layers: list[int]
    embedding: torch.Tensor | None
    num_frames: int

    @property
    def batch_size(self) -> int:
        return self.frames.shape[0]

    def tokens(self, i: int) -> torch.Tensor:
        """The full token sequence ``[B*T, 1+N, W]`` (class token first) of the i-th tapped layer."""
        return torch.cat([self.cls_tokens[i], self.patch_tokens[i]], dim=1)

    def to(self, device: torch.device | str) -> "SideInputs":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return SideInputs(move(self.frames), [move(t) for t in self.cls_tokens], [move(t) for t in self.patch_tokens],
                          list(self.layers), None if self.embedding is None else move(self.embedding), self.num_frames)

    @staticmethod
    def from_tokens(frames: torch.Tensor, tokens: list[torch.Tensor], embedding: torch.Tensor | None = None,
                    layers: list[int] | None = None) -> "SideInputs":
        """Build from full token sequences ``[B*T, 1+N, W]`` (tests, converted features)."""
        return SideInputs(frames, [t[:, :1] for t in tokens], [t[:, 1:] for t in tokens],
                          list(layers) if layers is not None else list(range(len(tokens))), embedding,
                          frames.shape[1])


__all__ = ["SideInputs"]
