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
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import Range
from .base import SIDE_MODULES, BlockContext, SideModule
from .norm import TokenBatchNorm


def temporal_shift(x: torch.Tensor, num_frames: int, fold_div: int = 8, online: bool = False,
                   extend=None) -> torch.Tensor:
    """Shift channel slices of ``x [B*T, ..., C]`` (frame-major rows) along time, zero-filled at the ends.

    Bi-directional: ``C // fold_div`` channels from frame t+1 and the next ``C // fold_div`` from t−1.
    Online: ``2 · C // fold_div`` channels from t−1 only, so the output at t never depends on later frames; the
    frame before the first comes from ``extend(seq, 1)`` (streaming history, see ``TemporalHistory``), else zeros.
    """
    channels = x.shape[-1]
    fold = channels // fold_div
    seq = x.reshape(-1, num_frames, *x.shape[1:])
    if online:
        if extend is None:
            past = F.pad(seq[:, :-1, ..., :2 * fold], (0, 0) * (seq.dim() - 2) + (1, 0))
        else:
            past = extend(seq[..., :2 * fold], 1)[:, :-1]
        return torch.cat([past, seq[..., 2 * fold:]], dim=-1).reshape(x.shape)
    out = torch.zeros_like(seq)
    out[:, :-1, ..., :fold] = seq[:, 1:, ..., :fold]
    out[:, 1:, ..., fold:2 * fold] = seq[:, :-1, ..., fold:2 * fold]
    out[..., 2 * fold:] = seq[..., 2 * fold:]
    return out.reshape(x.shape)


@SIDE_MODULES.register("tsm")
class TemporalShift(SideModule):
    """TSM on the side block's residual branch: ``x + shift(BN(x))`` (post-norm: ``x + BN(shift(x))``). In a causal
    side network (``causal``, given by the network) it is the online form whatever ``online`` says."""

    has_causal_form = True

    def __init__(self, dim: int, *, fold_div: Annotated[int, Range(2)] = 8, online: bool = False,
                 shift_cls: bool = False, post_norm: bool = False, sync_bn: bool = False, causal: bool = False):
        super().__init__()
        if fold_div < 2:
            raise ConfigError(f"TSM fold_div must be at least 2 (2/fold_div of the channels move), got {fold_div}")
        self.fold_div = fold_div
        self.online = online or causal
        self.causal = self.online
        self.shift_cls = shift_cls
        self.post_norm = post_norm
        self.norm = TokenBatchNorm(dim, sync=sync_bn)

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        t = ctx.num_frames

        def shift(tokens: torch.Tensor, name: str) -> torch.Tensor:
            extend = None
            if self.online and ctx.history is not None:   # streaming: the previous frame from the history
                def extend(seq, keep):
                    return ctx.past_and_present(name, seq, keep)
            return temporal_shift(tokens, t, self.fold_div, self.online, extend)

        if self.shift_cls and ctx.cls is not None:
            ctx.cls = shift(ctx.cls, "cls")
        if self.post_norm:
            return x + self.norm(shift(x, "x"))
        return x + shift(self.norm(x), "x")

    def init_weights(self, depth: int) -> None:
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)


__all__ = ["TemporalShift", "temporal_shift"]
