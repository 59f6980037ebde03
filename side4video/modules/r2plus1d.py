"""(2+1)D convolution adapter (D. Tran, H. Wang, L. Torresani, J. Ray, Y. LeCun, M. Paluri, "A Closer Look at
Spatiotemporal Convolutions for Action Recognition", CVPR 2018) on the side token grid ``(B, C, T, h, w)``.

    x + BN₂(Conv_{3×1×1}(ReLU(BN₁(Conv_{1×3×3}(x))))),   M = ⌊t·d²·C·C / (d²·C + t·C)⌋ = ⌊9C/4⌋ mid channels

The 3×3×3 convolution C → C is factorised into a spatial 1×3×3 convolution C → M (each frame on its own) and a
temporal 3×1×1 convolution M → C (each position over frames t−1, t, t+1), zero-padded in space and time, with
the paper's parameter-matched mid width M (t = d = 3), so the two convolutions have as many weights as the
3×3×3 one (exactly when 4 divides C): 12·C·M ≈ 27·C². That is heavy (2.76 M weights per block at C = 320);
``mid_channels`` sets a bottleneck instead. Convolutions without bias (BatchNorm follows each).

The last BatchNorm's γ and β start at 0, so the adapter is exactly the identity at initialisation (set in
:meth:`init_weights`, after the side network's generic norm init).

Default placement: ``pre_attn`` of every block, the slot of Side4Video's temporal convolution, so
``temporal_module: none`` with this module swaps that convolution for a (2+1)D one like for like.
"""
from __future__ import annotations

from typing import Annotated

import torch
from timm.layers import DropPath
from torch import nn

from ..errors import ConfigError
from ..registry import Range
from .base import SIDE_MODULES, BlockContext, VideoSideModule
from .norm import TokenBatchNorm


def param_matched_mid_channels(in_channels: int, out_channels: int, t: int = 3, d: int = 3) -> int:
    """R(2+1)D's M_i = ⌊t·d²·N_{i−1}·N_i / (d²·N_{i−1} + t·N_i)⌋: the (2+1)D block then has the t×d×d conv's
    parameter count."""
    return (t * d * d * in_channels * out_channels) // (d * d * in_channels + t * out_channels)


def _norm_channels_first(norm: TokenBatchNorm, v: torch.Tensor) -> torch.Tensor:
    """TokenBatchNorm (channel-last, sync-capable) on a channel-first tensor ``(B, C, ...)``."""
    return norm(v.movedim(1, -1)).movedim(-1, 1)


@SIDE_MODULES.register("r2plus1d")
class R2Plus1DAdapter(VideoSideModule):
    """Residual (2+1)D conv adapter: spatial 1×3×3 → BN → ReLU → temporal 3×1×1 → zero-init BN, plus the input."""

    causal = False
    default_slot = "pre_attn"
    default_blocks = "all"

    def __init__(self, dim: int, *, mid_channels: Annotated[int, Range(1)] | None = None, sync_bn: bool = False,
                 drop_path: float = 0.0):
        super().__init__()
        if dim < 1:
            raise ConfigError(f"(2+1)D adapter needs a positive width, got dim={dim}")
        if mid_channels is not None and (isinstance(mid_channels, bool) or not isinstance(mid_channels, int)
                                         or mid_channels < 1):
            raise ConfigError(f"(2+1)D mid_channels must be a positive integer or null, got {mid_channels!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"(2+1)D drop_path must be in [0, 1), got {drop_path!r}")
        mid = param_matched_mid_channels(dim, dim) if mid_channels is None else mid_channels
        self.dim = dim
        self.mid_channels = mid
        self.spatial = nn.Conv3d(dim, mid, kernel_size=(1, 3, 3), padding=(0, 1, 1), bias=False)
        self.spatial_norm = TokenBatchNorm(mid, sync=sync_bn)
        self.act = nn.ReLU(inplace=True)
        self.temporal = nn.Conv3d(mid, dim, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
        self.temporal_norm = TokenBatchNorm(dim, sync=sync_bn)
        self.drop_path = DropPath(drop_path)

    def spatial_features(self, v: torch.Tensor) -> torch.Tensor:
        """ReLU(BN₁(Conv_{1×3×3}(v))) of ``v (B, C, T, h, w)`` → ``(B, M, T, h, w)``."""
        return self.act(_norm_channels_first(self.spatial_norm, self.spatial(v)))

    def branch(self, v: torch.Tensor) -> torch.Tensor:
        """The residual branch on ``v (B, C, T, h, w)``."""
        return _norm_channels_first(self.temporal_norm, self.temporal(self.spatial_features(v)))

    def forward_video(self, v: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        return v + self.drop_path(self.branch(v))

    def init_weights(self, depth: int) -> None:
        """Convolutions Kaiming-normal (fan-out, ReLU); BN₁ γ = 1, β = 0; BN₂ γ = β = 0 (identity at init)."""
        for conv in (self.spatial, self.temporal):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.spatial_norm.weight)
        nn.init.zeros_(self.spatial_norm.bias)
        nn.init.zeros_(self.temporal_norm.weight)
        nn.init.zeros_(self.temporal_norm.bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mid_channels={self.mid_channels}"


__all__ = ["R2Plus1DAdapter", "param_matched_mid_channels"]
