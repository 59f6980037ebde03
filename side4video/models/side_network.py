"""The Side4Video side network (Yao et al., arXiv 2311.15769), faithful to the released recognition code.

The side stream carries patch tokens only. For every tapped backbone layer, the layer's full token
sequence is normalised and projected to the side width; its patches are fused into the side stream and
its class token, shifted in time, joins the keys/values of the side block's attention:

    x ← (1-α)·x + α·P(patches_k)                          (α = 0.5 in the reference)
    x ← x + Mix_t(BN(x))                                    temporal branch (PW → DW 3×1×1 → PW)
    x ← x + Attn(q = LN(x + pos), kv = LN([shift_t(P(cls_k)); x + pos]))
    x ← x + MLP(BN(x))                                      (pre-norm, CLIP); post-norm for EVA

Fixes relative to the reference: the temporal convs are initialised on purpose (the reference's init loop
names layers that do not exist), and residual output projections use std D^-½·(2L)^-½ with L the actual
number of side blocks instead of a hard-coded 12.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbones.frozen import BackboneInfo, LayerSpec, select_layers
from ..modules.norm import TokenBatchNorm
from ..modules.temporal import create_temporal_mixer, residual_init_std


def shift_cls_in_time(cls: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[B*T, 1, D]`` → same shape: channels [:D/2] of frame t come from t+1, [D/2:] from t-1, zeros at the ends."""
    dim = cls.shape[-1]
    half = dim // 2
    seq = cls.reshape(-1, num_frames, dim)
    from_next = F.pad(seq[:, 1:, :half], (0, 0, 0, 1))
    from_prev = F.pad(seq[:, :-1, half:], (0, 0, 1, 0))
    return torch.cat([from_next, from_prev], dim=-1).reshape_as(cls)


class SideStem(nn.Module):
    """Conv3d(3→D, kernel (3, p, p), stride (1, p, p), temporal padding 1) + BN on the raw frames."""

    def __init__(self, dim: int, patch_size: int, sync_bn: bool = False):
        super().__init__()
        self.conv = nn.Conv3d(3, dim, kernel_size=(3, patch_size, patch_size), stride=(1, patch_size, patch_size),
                              padding=(1, 0, 0), bias=False)  # BN follows: a bias would be redundant
        self.bn = TokenBatchNorm(dim, sync=sync_bn)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, T, 3, H, W]`` → patch tokens ``[B*T, h*w, D]``."""
        x = self.conv(frames.transpose(1, 2))                       # [B, D, T, h, w]
        return self.bn(x.permute(0, 2, 3, 4, 1).flatten(2, 3).flatten(0, 1))


class TapProjection(nn.Module):
    """LayerNorm(W) + Linear(W → D) on one backbone layer's full token sequence."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(tokens))


class SideAttention(nn.Module):
    """Multi-head attention whose queries are the patch tokens and keys/values are [cls; patches]."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"side width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``[M, 1+N, D]`` (cls first) → ``[M, N, D]`` for the N patch queries."""
        m, length, dim = tokens.shape
        q, k, v = self.qkv(tokens).reshape(m, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q[:, :, 1:], k, v)     # [M, heads, N, hd]
        return self.proj(out.transpose(1, 2).reshape(m, length - 1, dim))


class SideMlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at eval and with p = 0)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class SideBlock(nn.Module):
    """One Side4Video block: temporal branch, [CLS]-token-shift attention, MLP."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, temporal_module: str = "conv",
                 norm: str = "pre", drop_path: float = 0.0, sync_bn: bool = False):
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"side block norm must be 'pre' or 'post', got {norm!r}")
        self.post_norm = norm == "post"
        self.temporal = create_temporal_mixer(temporal_module, dim)
        self.temporal_norm = TokenBatchNorm(dim, sync=sync_bn) if self.temporal is not None else None
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SideAttention(dim, num_heads)
        self.mlp_norm = TokenBatchNorm(dim, sync=sync_bn)
        self.mlp = SideMlp(dim, mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def _mix_time(self, x: torch.Tensor, grid: tuple[int, int, int, int]) -> torch.Tensor:
        b, t, h, w = grid
        x5 = x.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3)      # (B, D, T, h, w)
        return self.temporal(x5).permute(0, 2, 3, 4, 1).reshape(x.shape)

    def forward(self, x: torch.Tensor, cls: torch.Tensor, pos: torch.Tensor,
                grid: tuple[int, int, int, int]) -> torch.Tensor:
        """x ``[B*T, N, D]`` patch stream, cls ``[B*T, 1, D]`` projected backbone cls, pos ``[N, D]``."""
        shifted = shift_cls_in_time(cls, grid[1])
        if self.post_norm:
            if self.temporal is not None:
                x = x + self.drop_path(self.temporal_norm(self._mix_time(x, grid)))
            x = x + self.drop_path(self.attn_norm(self.attn(torch.cat([shifted, x + pos], dim=1))))
            return x + self.drop_path(self.mlp_norm(self.mlp(x)))
        if self.temporal is not None:
            x = x + self.drop_path(self._mix_time(self.temporal_norm(x), grid))
        x = x + self.drop_path(self.attn(self.attn_norm(torch.cat([shifted, x + pos], dim=1))))
        return x + self.drop_path(self.mlp(self.mlp_norm(x)))

    def init_weights(self, num_blocks: int) -> None:
        dim = self.attn.proj.in_features
        out_std = residual_init_std(dim, num_blocks)
        nn.init.normal_(self.attn.qkv.weight, std=dim ** -0.5)
        nn.init.normal_(self.attn.proj.weight, std=out_std)
        nn.init.normal_(self.mlp.fc1.weight, std=(2 * dim) ** -0.5)
        nn.init.normal_(self.mlp.fc2.weight, std=out_std)
        for linear in (self.attn.qkv, self.attn.proj, self.mlp.fc1, self.mlp.fc2):
            nn.init.zeros_(linear.bias)
        if self.temporal is not None:
            self.temporal.init_weights(out_std)


def default_num_heads(dim: int) -> int:
    """Heads of width 64 as in the reference (D // 64); for widths that 64 does not divide, the nearest
    smaller head count that divides D."""
    heads = max(dim // 64, 1)
    while dim % heads:
        heads -= 1
    return heads


class SideNetwork(nn.Module):
    """Side4Video recognition model: side stem, one side block per tapped backbone layer, BN-pool-FC head.

    ``forward(frames, tokens)`` takes the raw frames ``[B, T, 3, H, W]`` and the frozen backbone's tokens of the
    layers in :attr:`backbone_layers` (``[B*T, 1+N, W]`` each) and returns logits ``[B, num_classes]``.
    It knows nothing of open_clip or timm.
    """

    needs_embedding = False

    def __init__(self, backbone: BackboneInfo, num_classes: int, *, side_dim: int = 320,
                 layers: LayerSpec = None, norm: str | None = None, fusion_weight: float = 0.5,
                 temporal_module: str = "conv", mlp_ratio: float = 4.0, num_heads: int | None = None,
                 drop_fc: float = 0.0, drop_path: float = 0.0, grad_checkpointing: bool = False,
                 sync_bn: bool = False):
        super().__init__()
        eva = backbone.family == "eva"
        if layers is None:
            layers = "every_other" if eva else "all"
        self.backbone_layers = select_layers(backbone.num_layers, layers)
        if not self.backbone_layers:
            raise ValueError("the side network needs at least one backbone layer")
        norm = norm or ("post" if eva else "pre")
        num_heads = num_heads or default_num_heads(side_dim)
        self.side_dim = side_dim
        self.fusion_weight = fusion_weight
        self.grad_checkpointing = grad_checkpointing
        self.grid = backbone.grid_size
        self.stem = SideStem(side_dim, backbone.patch_size, sync_bn)
        self.taps = nn.ModuleList(TapProjection(backbone.width, side_dim) for _ in self.backbone_layers)
        n = len(self.backbone_layers)
        rates = [drop_path * i / max(n - 1, 1) for i in range(n)]  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            SideBlock(side_dim, num_heads, mlp_ratio=mlp_ratio, temporal_module=temporal_module, norm=norm,
                      drop_path=rate, sync_bn=sync_bn) for rate in rates)
        self.pos_embed = nn.Parameter(torch.zeros(backbone.num_patches, side_dim))
        self.head_norm = TokenBatchNorm(side_dim, sync=sync_bn)
        self.dropout = nn.Dropout(drop_fc)
        self.fc = nn.Linear(side_dim, num_classes)
        self._init_weights(pos_std=0.02 if eva else 0.01)

    def _init_weights(self, pos_std: float) -> None:
        nn.init.normal_(self.pos_embed, std=pos_std)
        for tap in self.taps:
            nn.init.normal_(tap.proj.weight, std=(2 * self.side_dim) ** -0.5)
            nn.init.zeros_(tap.proj.bias)
        for block in self.blocks:
            block.init_weights(len(self.blocks))
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, frames: torch.Tensor, tokens: Sequence[torch.Tensor]) -> torch.Tensor:
        """Pooled side features ``[B, D]``."""
        if len(tokens) != len(self.blocks):
            raise ValueError(f"expected tokens of {len(self.blocks)} backbone layers, got {len(tokens)}")
        dtype = self.stem.conv.weight.dtype
        b, t = frames.shape[:2]
        grid = (b, t, self.grid, self.grid)
        x = self.stem(frames.to(dtype))
        alpha = self.fusion_weight
        for tap, block, layer_tokens in zip(self.taps, self.blocks, tokens):
            projected = tap(layer_tokens.to(dtype))
            x = (1 - alpha) * x + alpha * projected[:, 1:]
            cls = projected[:, :1]
            if self.grad_checkpointing and self.training:
                x = checkpoint(block, x, cls, self.pos_embed, grid, use_reentrant=False)
            else:
                x = block(x, cls, self.pos_embed, grid)
        return self.head_norm(x).reshape(b, -1, self.side_dim).mean(dim=1)

    def forward(self, frames: torch.Tensor, tokens: Sequence[torch.Tensor],
                embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(frames, tokens)))
