"""The side-module interface: what a pluggable part of a side block receives, owns and promises.

A side module sits in one of a side block's three slots and transforms the block's patch stream
``x [B*T, N, D]`` (patch tokens only, frame-major: row ``b * T + t``). It owns its residual: ``forward``
returns the new stream, so additive branches (``x + f(x)``), multiplicative gates (``x * g(x)``) and
replacements are all possible. Where in the block it runs:

* ``pre_attn``  before the [CLS]-token-shift attention (where Side4Video's temporal convolution sits);
* ``post_attn`` between the attention and the MLP;
* ``post_mlp``  after the MLP, at the end of the block.

Its keyword arguments come from the config (``network.side_modules``) and are checked against the
constructor when the config loads. The block passes what it knows about the place the module runs in
through :class:`BlockContext`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

SLOTS = ("pre_attn", "post_attn", "post_mlp")


class TemporalHistory:
    """The frames before the current call that causal temporal operations read (online, frame-by-frame use).

    A causal operation with a kernel reaching ``keep`` frames into the past calls :meth:`extend` with its input
    sequence ``[B, T, ...]`` and gets ``[B, keep + T, ...]``: the remembered last ``keep`` frames of the previous
    call (zeros at the start of a stream) followed by the present ones, and the last ``keep`` frames are
    remembered for the next call. Zeros are also what causal zero padding gives offline, so a clip processed
    frame by frame computes exactly what one call over the whole clip computes.

    The store is a flat ``name → tensor`` dict that the caller owns (the streaming state); names are scoped per
    block and module (:meth:`scope`). ``store=None`` remembers nothing: plain left zero padding (offline).
    """

    def __init__(self, store: dict[str, torch.Tensor] | None = None, prefix: str = ""):
        self.store = store
        self.prefix = prefix

    def scope(self, name: str) -> "TemporalHistory":
        return TemporalHistory(self.store, f"{self.prefix}{name}.")

    def extend(self, name: str, seq: torch.Tensor, keep: int) -> torch.Tensor:
        """``seq [B, T, ...]`` → ``[B, keep + T, ...]`` with the remembered (or zero) past in front."""
        if keep <= 0:
            return seq
        key = self.prefix + name
        past = None if self.store is None else self.store.get(key)
        if past is None:
            full = F.pad(seq, (0, 0) * (seq.dim() - 2) + (keep, 0))
        else:
            full = torch.cat([past.to(seq.dtype), seq], dim=1)
        if self.store is not None:
            self.store[key] = full[:, -keep:].detach()
        return full


@dataclass
class BlockContext:
    """What a side module may know about where it runs."""
    grid: tuple[int, int, int, int]      # B, T, h, w of the patch stream
    index: int                           # this side block, 0-based
    depth: int                           # number of side blocks
    cls: torch.Tensor | None = None      # the layer's projected backbone class token [B*T, 1, D] (a module may
    #                                      replace it, e.g. TSM with shift_cls=True; the attention reads it after
    #                                      the pre_attn modules)
    causal: bool = False                 # the side network is causal: temporal operations look only backwards
    history: TemporalHistory | None = None   # this module's remembered past frames (streaming), else None

    def past_and_present(self, name: str, seq: torch.Tensor, keep: int) -> torch.Tensor:
        """``seq [B, T, ...]`` with ``keep`` past frames in front: remembered ones when streaming, else zeros."""
        return (self.history or TemporalHistory()).extend(name, seq, keep)

    @property
    def batch(self) -> int:
        return self.grid[0]

    @property
    def num_frames(self) -> int:
        return self.grid[1]


class SideModule(nn.Module):
    """Base of every side module. ``forward(x, ctx)``: ``[B*T, N, D]`` → ``[B*T, N, D]``, residual included.

    Class attributes:
        causal: True if the output at frame t never depends on frames after t (online use).
        has_causal_form: the constructor takes ``causal: bool`` (given by the side network when
            ``network.causal`` is set) and then looks only at the present and the past, reading past frames
            through ``ctx.past_and_present`` so that it also runs frame by frame on a stream. A module without
            one cannot be part of a causal side network (a config error naming it).
        default_slot / default_blocks: where the module goes when the config does not say.
    """

    causal: bool = False
    has_causal_form: bool = False
    default_slot: str = "pre_attn"
    default_blocks: Any = "all"

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def init_weights(self, depth: int) -> None:
        """The module's own initialisation; runs after the side network's generic init and is never overwritten.

        ``depth`` is the number of side blocks (for depth-aware residual scales)."""


class VideoSideModule(SideModule):
    """A side module that works on the token grid ``(B, D, T, h, w)``; the permutes live here once."""

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        b, t, h, w = ctx.grid
        video = x.reshape(b, t, h, w, x.shape[-1]).permute(0, 4, 1, 2, 3)
        out = self.forward_video(video, ctx)
        return out.permute(0, 2, 3, 4, 1).reshape(x.shape)

    def forward_video(self, v: torch.Tensor, ctx: BlockContext) -> torch.Tensor:  # pragma: no cover - interface
        """``(B, D, T, h, w)`` → same shape, residual included."""
        raise NotImplementedError


def residual_init_std(dim: int, num_blocks: int) -> float:
    """Std of residual-branch output projections: D^-½ · (2L)^-½ for L side blocks (the reference hard-codes L=12)."""
    return dim ** -0.5 * (2 * max(num_blocks, 1)) ** -0.5 if dim > 0 else 0.0


# name → side module class; ``dim`` (the side width) is always given by the side network, never by a config
SIDE_MODULES: Registry[SideModule] = Registry("side module", base=SideModule, skip=("dim",))

__all__ = [
    "SIDE_MODULES", "SLOTS", "BlockContext", "TemporalHistory", "SideModule", "VideoSideModule", "residual_init_std"
]
