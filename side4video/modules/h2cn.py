"""H2CN's clip-level hourglass channel gate, CHGC (Y. Tan, Y. Hao et al., "Hierarchical Hourglass Convolutional
Network for Efficient Video Classification", ACM MM 2022), as a gating side module.

    x_t ← x_t ⊙ s·σ(BN(W_up · GAP_hw(w₀⊙A_{t−1} + w₁⊙r_t + w₂⊙A_{t+1}))),   r = BN(W_down x),  A = DW_{3×3}(r)

The stream is reduced to ``Cr = max(1, C // reduction)`` channels (1×1 + BN), ``SpatialAgg`` (a depthwise 3×3)
widens the spatial receptive field of the neighbouring frames, and the hourglass convolution, a depthwise
temporal convolution with kernel 3 and stride 3 over the triplets ``[A_{t−1}, r_t, A_{t+1}]``, gives one output
per frame. The triplets are ZERO-padded at t = 0 and t = T−1 (no wrap-around). A global average pool over
(h, w), a 1×1 expansion back to C + BN and a sigmoid give one gate per (b, t, c).

Because the hourglass convolution is depthwise and has no bias, it commutes with the spatial average pool, so
the triplets are built from the pooled ``r`` and ``A`` (``(B, Cr, T)``, not ``(B, Cr, T, h, w)``): the same
numbers at 1/(h·w) of the cost.

As GC (``modules/gc.py``) the gate acts on the side block's residual stream and is scaled, ``s·σ(z)`` with
``gate_scale`` s = 2 by default (a neutral context leaves the stream unchanged; s = 1 is the paper's sigmoid).
The gate of a frame depends on its neighbours t ± 1 only (before BatchNorm's batch statistics), but the module
is not causal: frame t sees t+1.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import Range
from .base import SIDE_MODULES, BlockContext, SideModule
from .norm import TokenBatchNorm


@SIDE_MODULES.register("h2cn")
class HourglassChannelGate(SideModule):
    """CHGC: a per-(b, t, c) channel gate from hourglass temporal triplets of channel-reduced features."""

    causal = False
    default_slot = "pre_attn"
    default_blocks = "all"

    def __init__(self, dim: int, *, reduction: Annotated[int, Range(1)] = 16, gate_scale: float = 2.0,
                 sync_bn: bool = False):
        super().__init__()
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ConfigError(f"H2CN reduction must be a positive integer, got {reduction!r}")
        if isinstance(gate_scale, bool) or not isinstance(gate_scale, (int, float)) or not math.isfinite(gate_scale) \
                or gate_scale <= 0:
            raise ConfigError(f"H2CN gate_scale must be a positive number, got {gate_scale!r}")
        if dim < 1:
            raise ConfigError(f"H2CN needs a positive width, got dim={dim}")
        reduced = max(1, dim // reduction)
        self.dim = dim
        self.reduced = reduced
        self.gate_scale = float(gate_scale)
        # no biases before BatchNorm (it removes them), none in the hourglass conv (so it commutes with pooling)
        self.reduce = nn.Linear(dim, reduced, bias=False)                   # 1×1 conv C → Cr on channel-last
        self.reduce_norm = TokenBatchNorm(reduced, sync=sync_bn)
        self.spatial_agg = nn.Conv2d(reduced, reduced, kernel_size=3, padding=1, groups=reduced, bias=False)
        self.hourglass = nn.Conv1d(reduced, reduced, kernel_size=3, stride=3, groups=reduced, bias=False)
        self.expand = nn.Linear(reduced, dim, bias=False)                   # 1×1 conv Cr → C
        self.expand_norm = TokenBatchNorm(dim, sync=sync_bn)

    def context(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """The pre-sigmoid gate ``z [B*T, D]`` of ``x [B*T, N, D]``."""
        b, t, h, w = ctx.grid
        r = self.reduce_norm(F.linear(x, self.reduce.weight))              # [B*T, N, Cr]
        a = self.spatial_agg(r.reshape(b * t, h, w, self.reduced).permute(0, 3, 1, 2))   # (B*T, Cr, h, w)
        r_pool = r.mean(dim=1).reshape(b, t, self.reduced).transpose(1, 2)   # (B, Cr, T)
        a_pool = a.mean(dim=(2, 3)).reshape(b, t, self.reduced).transpose(1, 2)
        a_prev = F.pad(a_pool, (1, 0))[..., :t]                            # A_{t-1}, zeros at t = 0
        a_next = F.pad(a_pool, (0, 1))[..., 1:]                            # A_{t+1}, zeros at t = T-1
        triplets = torch.stack([a_prev, r_pool, a_next], dim=-1).reshape(b, self.reduced, 3 * t)
        m = self.hourglass(triplets)                                       # stride 3: one output per frame
        m = m.transpose(1, 2).reshape(b * t, self.reduced)
        return self.expand_norm(F.linear(m, self.expand.weight))

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        gate = self.gate_scale * torch.sigmoid(self.context(x, ctx))
        return x * gate.unsqueeze(1)

    def init_weights(self, depth: int) -> None:
        """Convolutions (1×1, SpatialAgg, hourglass) Xavier-normal, BN γ = 1, β = 0."""
        for layer in (self.reduce, self.spatial_agg, self.hourglass, self.expand):
            nn.init.xavier_normal_(layer.weight)
        for norm in (self.reduce_norm, self.expand_norm):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, reduced={self.reduced}, gate_scale={self.gate_scale}"


__all__ = ["HourglassChannelGate"]
