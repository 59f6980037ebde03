"""TSM: Temporal Shift Module (Lin, Gan, Han, "TSM: Temporal Shift Module for Efficient Video Understanding",
ICCV 2019), as a zero-parameter side module on the residual branch ("residual shift").

    x + shift_t(BN(x))       bi-directional: channels [0, C/8) from t+1, [C/8, 2C/8) from t−1, zero at the ends
                             online (uni-directional, causal): channels [0, 2C/8) from t−1 only

The class token is not shifted unless ``shift_cls=True`` (then the layer's projected class token that joins the
attention's keys/values is shifted the same way before the attention's own [CLS]-token shift).
"""
from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Range
from .base import SIDE_MODULES, BlockContext, SideModule
from .norm import TokenBatchNorm


def temporal_shift(x: torch.Tensor, num_frames: int, fold_div: int = 8, online: bool = False) -> torch.Tensor:
    """Shift channel slices of ``x [B*T, ..., C]`` (frame-major rows) along time, zero-filled at the ends.

    Bi-directional: ``C // fold_div`` channels from frame t+1 and the next ``C // fold_div`` from t−1.
    Online: ``2 · C // fold_div`` channels from t−1 only, so the output at t never depends on later frames.
    """
    channels = x.shape[-1]
    fold = channels // fold_div
    seq = x.reshape(-1, num_frames, *x.shape[1:])
    out = torch.zeros_like(seq)
    if online:
        out[:, 1:, ..., :2 * fold] = seq[:, :-1, ..., :2 * fold]
    else:
        out[:, :-1, ..., :fold] = seq[:, 1:, ..., :fold]
        out[:, 1:, ..., fold:2 * fold] = seq[:, :-1, ..., fold:2 * fold]
    out[..., 2 * fold:] = seq[..., 2 * fold:]
    return out.reshape(x.shape)


@SIDE_MODULES.register("tsm")
class TemporalShift(SideModule):
    """TSM on the side block's residual branch: ``x + shift(BN(x))`` (post-norm: ``x + BN(shift(x))``)."""

    def __init__(self, dim: int, *, fold_div: Annotated[int, Range(2)] = 8, online: bool = False,
                 shift_cls: bool = False, post_norm: bool = False, sync_bn: bool = False):
        super().__init__()
        if fold_div < 2:
            raise ConfigError(f"TSM fold_div must be at least 2 (2/fold_div of the channels move), got {fold_div}")
        self.fold_div = fold_div
        self.online = online
        self.causal = online
        self.shift_cls = shift_cls
        self.post_norm = post_norm
        self.norm = TokenBatchNorm(dim, sync=sync_bn)

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        t = ctx.num_frames
        if self.shift_cls and ctx.cls is not None:
            ctx.cls = temporal_shift(ctx.cls, t, self.fold_div, self.online)
        if self.post_norm:
            return x + self.norm(temporal_shift(x, t, self.fold_div, self.online))
        return x + temporal_shift(self.norm(x), t, self.fold_div, self.online)

    def init_weights(self, depth: int) -> None:
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)


__all__ = ["TemporalShift", "temporal_shift"]
