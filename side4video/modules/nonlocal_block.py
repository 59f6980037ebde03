"""Non-local block, embedded-Gaussian form (X. Wang, R. Girshick, A. Gupta, K. He, "Non-local Neural Networks",
CVPR 2018), as a residual side module: space-time attention over all T·h·w side tokens of a clip.

    z_i = x_i + BN(W_z Σ_j softmax_j(θ(x_i)ᵀ φ(x)_j) g(x)_j),   j over the (2×2 max-pooled) positions of the clip

θ, φ and g are 1×1×1 projections to ``C' = C // reduction``; with ``sub_sample`` φ and g are max-pooled
(1, 2, 2) (per axis, only where that axis has at least 2 positions), so there are T·⌊h/2⌋·⌊w/2⌋ keys; the
queries keep the full resolution, so the output has the input's shape. As the paper, the similarity is the raw
dot product (no 1/√C' scale). The output BatchNorm's γ and β start at 0, so the block is exactly the identity at
initialisation (set in :meth:`init_weights`, after the side network's generic norm init).

The 1×1×1 projections are linear layers on the channel-last stream (no permutes to (B, C, T, h, w)).

Default placement: ``post_attn`` (between the block's attention and its MLP) of every other side block, ending at
the last one (``blocks: 2``: blocks 1, 3, 5, 7, 9, 11 of 12). This translates TSM-NL's "every other block of
res3/res4" (5 NL blocks in a ResNet-50) to a ViT-depth side network. A 1-block side network gets none by
default; name the blocks in the config (``blocks: all`` or ``[0]``) there.
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ..errors import ConfigError
from ..registry import Range
from .base import SIDE_MODULES, BlockContext, SideModule
from .norm import TokenBatchNorm


@SIDE_MODULES.register("nonlocal")
class NonLocalBlock(SideModule):
    """Embedded-Gaussian non-local block over space-time, zero-initialised output BN (identity at init)."""

    causal = False
    default_slot = "post_attn"
    default_blocks = 2

    def __init__(self, dim: int, *, reduction: Annotated[int, Range(1)] = 2, sub_sample: bool = True,
                 sync_bn: bool = False, drop_path: float = 0.0):
        super().__init__()
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ConfigError(f"non-local reduction must be a positive integer, got {reduction!r}")
        if dim // reduction < 1:
            raise ConfigError(f"non-local reduction {reduction} leaves no channel of dim={dim}")
        if not isinstance(sub_sample, bool):
            raise ConfigError(f"non-local sub_sample must be true or false, got {sub_sample!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"non-local drop_path must be in [0, 1), got {drop_path!r}")
        inner = dim // reduction
        self.dim = dim
        self.inner = inner
        self.sub_sample = sub_sample
        self.theta = nn.Linear(dim, inner)
        self.phi = nn.Linear(dim, inner)
        self.g = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)                                   # W_z
        self.norm = TokenBatchNorm(dim, sync=sync_bn)
        self.drop_path = DropPath(drop_path)

    def keys_values(self, x: torch.Tensor, ctx: BlockContext) -> tuple[torch.Tensor, torch.Tensor]:
        """φ and g of ``x [B*T, N, D]``, (sub-sampled) → two ``[B, T·h'·w', C']``."""
        b, t, h, w = ctx.grid
        kv = torch.cat([F.linear(x, self.phi.weight, self.phi.bias), F.linear(x, self.g.weight, self.g.bias)], -1)
        kernel = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
        if self.sub_sample and kernel != (1, 1):
            # channel-last view as (B*T, 2C', h, w) (channels_last strides); floor mode drops an odd last row/col
            kv = F.max_pool2d(kv.reshape(b * t, h, w, 2 * self.inner).permute(0, 3, 1, 2), kernel)
            kv = kv.permute(0, 2, 3, 1)
        kv = kv.reshape(b, -1, 2 * self.inner)
        return kv[..., :self.inner], kv[..., self.inner:]

    def branch(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """``BN(W_z y)`` for ``x [B*T, N, D]``: the residual branch, ``[B*T, N, D]``."""
        b, t, h, w = ctx.grid
        query = F.linear(x, self.theta.weight, self.theta.bias).reshape(b, 1, t * h * w, self.inner)
        key, value = self.keys_values(x, ctx)
        # embedded Gaussian: softmax of the raw dot product, so scale=1 (not SDPA's default 1/sqrt(C'))
        y = F.scaled_dot_product_attention(query, key.unsqueeze(1), value.unsqueeze(1), scale=1.0)
        y = y.reshape(b * t, h * w, self.inner)
        return self.norm(self.out(y))

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        return x + self.drop_path(self.branch(x, ctx))

    def init_weights(self, depth: int) -> None:
        """Projections ~ N(0, 0.01), biases 0: small, because the similarity is an unscaled dot product (with
        unit-variance tokens its std is about 0.01²·D·√C', 0.4 for D = 320, so the softmax does not start
        saturated). Output BN γ = β = 0 so the block starts as the identity (the network's generic norm init,
        which sets γ = 1, runs before this)."""
        for linear in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(linear.weight, std=0.01)
            nn.init.zeros_(linear.bias)
        nn.init.zeros_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, inner={self.inner}, sub_sample={self.sub_sample}"


__all__ = ["NonLocalBlock"]
