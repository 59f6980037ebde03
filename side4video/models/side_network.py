"""The Side4Video side network (Yao et al., arXiv 2311.15769), computing what the released recognition code computes.

The side stream carries patch tokens only. For every tapped backbone layer k, the layer's tokens are projected
to the side width (CLIP: LayerNorm(W) → Linear(W→D); EVA: Linear(W→D) → LayerNorm(D), as the reference); the
projected patches are fused into the side stream and the projected class token, shifted in time, joins the keys
and values of the side block's attention:

    x ← (1-α)·x + α·P_k(patches_k)                       (α = 0.5 in the reference)
    x ← modules_pre_attn(x)                               default: x + PW(DW_3×1×1(PW(BN(x))))   (Side4Video)
    x ← x + Attn(q = LN(x + pos), kv = LN([shift_t(P_k(cls_k)); x + pos]))
    x ← modules_post_attn(x)
    x ← x + MLP(BN(x));  x ← modules_post_mlp(x)          pre-norm (CLIP); post-norm for EVA: x + Norm(f(x))

The head is BN (CLIP only, as the reference) → mean over T·h·w → dropout → Linear.
Each slot holds any number of pluggable side modules (``side4video/modules``), chosen in the config.

Causal (``causal=True``, ``network.causal``; online recognition): every temporal part looks only at the present
and the past — the stem's 3-frame kernel covers t-2..t, the class-token shift takes both halves from earlier
frames (t-1 and t-2), and every side module runs in its causal form (modules without one are refused). The
attention, MLP and norms are per frame. :meth:`SideNetwork.frame_features` then gives per-frame features whose
frame t depends on frames ≤ t only (in eval mode: in training BatchNorm's batch statistics mix frames), and, with a
:class:`~side4video.modules.TemporalHistory` store, runs a stream a few frames (or one) at a time with exactly
the results of one offline call (``side4video.streaming``).

Differences from the reference, on purpose: the temporal convs are initialised (the reference's init loop names
layers that do not exist), residual output projections use std D^-½·(2L)^-½ with L the real number of side blocks
instead of a hard-coded 12, and the stem has no bias (BatchNorm follows it; an official checkpoint's stem bias is
folded into the BatchNorm's running mean when it is loaded).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ..backbones.frozen import BackboneInfo, LayerSpec, select_layers
from ..errors import ConfigError
from ..modules import (
    SLOTS,
    BlockContext,
    TemporalHistory,
    TokenBatchNorm,
    check_causal_form,
    check_side_module_spec,
    create_side_module,
    module_plan,
    residual_init_std,
)
from ..modules.functional import recomputed_linear
from ..modules.norm import checkpoint_without_double_updates
from .inputs import SideInputs


def shift_cls_in_time(cls: torch.Tensor, num_frames: int) -> torch.Tensor:
    """``[B*T, 1, D]`` → same shape: channels [:D/2] of frame t come from t+1, [D/2:] from t-1, zeros at the ends."""
    dim = cls.shape[-1]
    half = dim // 2
    seq = cls.reshape(-1, num_frames, dim)
    from_next = F.pad(seq[:, 1:, :half], (0, 0, 0, 1))
    from_prev = F.pad(seq[:, :-1, half:], (0, 0, 1, 0))
    return torch.cat([from_next, from_prev], dim=-1).reshape_as(cls)


def shift_cls_causally(cls: torch.Tensor, num_frames: int, history: TemporalHistory | None = None) -> torch.Tensor:
    """The causal class-token shift: channels [:D/2] of frame t come from t-1, [D/2:] from t-2 (zeros, or the
    remembered frames of a stream, before the first)."""
    dim = cls.shape[-1]
    half = dim // 2
    seq = cls.reshape(-1, num_frames, *cls.shape[1:])
    full = (history or TemporalHistory()).extend("cls", seq, 2)          # frame i of full is time i - 2
    return torch.cat([full[:, 1:num_frames + 1, ..., :half], full[:, :num_frames, ..., half:]], dim=-1).reshape_as(cls)


def _layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.to(weight.dtype), weight.shape, weight, bias, eps)


class SideStem(nn.Module):
    """Conv3d(3→D, kernel (3, p, p), stride (1, p, p), temporal padding 1) + BN on the raw frames; causal: the
    kernel covers frames t-2..t (two frames of left padding, or the stream's remembered frames)."""

    def __init__(self, dim: int, patch_size: int, sync_bn: bool = False, causal: bool = False):
        super().__init__()
        self.causal = causal
        self.conv = nn.Conv3d(3, dim, kernel_size=(3, patch_size, patch_size), stride=(1, patch_size, patch_size),
                              padding=(0 if causal else 1, 0, 0), bias=False)  # BN follows: a bias would be redundant
        self.bn = TokenBatchNorm(dim, sync=sync_bn)

    def forward(self, frames: torch.Tensor, history: TemporalHistory | None = None) -> torch.Tensor:
        """``[B, T, 3, H, W]`` → patch tokens ``[B*T, h*w, D]``."""
        if self.causal:
            frames = (history or TemporalHistory()).extend("stem", frames, 2)
        x = self.conv(frames.transpose(1, 2))                       # [B, D, T, h, w]
        return self.bn(x.permute(0, 2, 3, 4, 1).flatten(2, 3).flatten(0, 1))


class TapProjection(nn.Module):
    """One backbone layer's tokens → side width: ``LayerNorm(W) → Linear(W → D)`` (``norm_position='input'``,
    the reference CLIP) or ``Linear(W → D) → LayerNorm(D)`` (``'output'``, the reference EVA).

    With ``recompute``, backward keeps only the tap itself (in the backbone's precision), not the normalised or
    up-cast copy of width W that the linear layer would otherwise keep.
    """

    def __init__(self, width: int, dim: int, norm_position: str = "input", recompute: bool = True):
        super().__init__()
        if norm_position not in ("input", "output"):
            raise ValueError(f"tap norm position must be 'input' or 'output', got {norm_position!r}")
        self.norm_position = norm_position
        self.recompute = recompute
        self.norm = nn.LayerNorm(width if norm_position == "input" else dim)
        self.proj = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weight, bias, norm = self.proj.weight, self.proj.bias, self.norm
        if self.norm_position == "input":
            def normalise(x, w=norm.weight, b=norm.bias):
                return _layer_norm(x, w, b, norm.eps)
            if self.recompute:
                return recomputed_linear(tokens, weight, bias, normalise, normalise, (norm.weight, norm.bias))
            return F.linear(normalise(tokens), weight, bias)

        def cast(x):
            return x.to(weight.dtype)
        projected = (recomputed_linear(tokens, weight, bias, cast, cast) if self.recompute
                     else F.linear(cast(tokens), weight, bias))
        return norm(projected)


class SideAttention(nn.Module):
    """Multi-head attention whose queries are the patch tokens and keys/values are [cls; patches]."""

    def __init__(self, dim: int, num_heads: int, recompute: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"side width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.recompute = recompute
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        """``tokens`` ``[M, 1+N, D]`` (cls first), normalised by ``norm`` first if given → ``[M, N, D]``."""
        m, length, dim = tokens.shape
        if norm is not None and self.recompute:
            def normalise(x, w=norm.weight, b=norm.bias):
                return _layer_norm(x, w, b, norm.eps)
            qkv = recomputed_linear(tokens, self.qkv.weight, self.qkv.bias, normalise, normalise,
                                    (norm.weight, norm.bias))
        else:
            qkv = self.qkv(norm(tokens) if norm is not None else tokens)
        q, k, v = qkv.reshape(m, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q[:, :, 1:], k, v)     # [M, heads, N, hd]

        def merge_heads(o):
            return o.transpose(1, 2).reshape(m, length - 1, dim)
        if self.recompute:
            return recomputed_linear(out, self.proj.weight, self.proj.bias, merge_heads, merge_heads)
        return self.proj(merge_heads(out))


class SideMlp(nn.Module):
    """Linear(D → ratio·D) → GELU → Linear(→ D); with ``recompute`` the input norm and GELU outputs are not kept."""

    def __init__(self, dim: int, ratio: float, recompute: bool = True):
        super().__init__()
        hidden = int(dim * ratio)
        self.recompute = recompute
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, norm: TokenBatchNorm | None = None) -> torch.Tensor:
        if norm is not None and self.recompute and not norm.synchronised:
            hidden = recomputed_linear(x, self.fc1.weight, self.fc1.bias, norm, norm.pure, (norm.weight, norm.bias))
        else:
            hidden = self.fc1(norm(x) if norm is not None else x)
        if self.recompute:
            return recomputed_linear(hidden, self.fc2.weight, self.fc2.bias, self.act, self.act)
        return self.fc2(self.act(hidden))


class SideBlock(nn.Module):
    """One Side4Video block: pre-attention modules, [CLS]-token-shift attention, post-attention modules, MLP,
    post-MLP modules (see the module docstring)."""

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, norm: str = "pre",
                 drop_path: float = 0.0, sync_bn: bool = False, recompute: bool = True,
                 modules: Mapping[str, Sequence[nn.Module]] | None = None, causal: bool = False):
        super().__init__()
        if norm not in ("pre", "post"):
            raise ValueError(f"side block norm must be 'pre' or 'post', got {norm!r}")
        self.post_norm = norm == "post"
        self.causal = causal
        modules = modules or {}
        self.pre_attn = nn.ModuleList(modules.get("pre_attn", ()))
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SideAttention(dim, num_heads, recompute=recompute)
        self.post_attn = nn.ModuleList(modules.get("post_attn", ()))
        self.mlp_norm = TokenBatchNorm(dim, sync=sync_bn)
        self.mlp = SideMlp(dim, mlp_ratio, recompute=recompute)
        self.post_mlp = nn.ModuleList(modules.get("post_mlp", ()))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, ctx: BlockContext, pos: torch.Tensor,
                history: TemporalHistory | None = None) -> torch.Tensor:
        """x ``[B*T, N, D]`` patch stream; ``ctx.cls`` ``[B*T, 1, D]`` projected backbone cls; pos ``[N, D]``, or
        ``[1+N, D]`` whose first row goes to the shifted class token (the retrieval variant, ``cls_pos_embed``);
        ``history``: this block's remembered past frames when streaming."""
        x = self._run_slot("pre_attn", x, ctx, history)
        if self.causal:
            shifted = shift_cls_causally(ctx.cls, ctx.num_frames, history)
        else:
            shifted = shift_cls_in_time(ctx.cls, ctx.num_frames)
        pos = pos.to(x.dtype)
        if pos.shape[0] == x.shape[1] + 1:
            # retrieval: the class token gets its position row after the shift (a shift would zero it at the ends)
            shifted, pos = shifted + pos[:1], pos[1:]
        tokens = torch.cat([shifted, x + pos], dim=1)
        if self.post_norm:
            x = x + self.drop_path(self.attn_norm(self.attn(tokens)))
        else:
            x = x + self.drop_path(self.attn(tokens, self.attn_norm))
        x = self._run_slot("post_attn", x, ctx, history)
        if self.post_norm:
            x = x + self.drop_path(self.mlp_norm(self.mlp(x)))
        else:
            x = x + self.drop_path(self.mlp(x, self.mlp_norm))
        return self._run_slot("post_mlp", x, ctx, history)

    def _run_slot(self, slot: str, x: torch.Tensor, ctx: BlockContext,
                  history: TemporalHistory | None) -> torch.Tensor:
        for position, module in enumerate(getattr(self, slot)):
            ctx.history = None if history is None else history.scope(f"{slot}.{position}")
            x = module(x, ctx)
        ctx.history = None
        return x

    def side_modules(self) -> list[nn.Module]:
        return [*self.pre_attn, *self.post_attn, *self.post_mlp]

    def init_weights(self, num_blocks: int) -> None:
        dim = self.attn.proj.in_features
        out_std = residual_init_std(dim, num_blocks)
        nn.init.normal_(self.attn.qkv.weight, std=dim ** -0.5)
        nn.init.normal_(self.attn.proj.weight, std=out_std)
        nn.init.normal_(self.mlp.fc1.weight, std=(2 * dim) ** -0.5)
        nn.init.normal_(self.mlp.fc2.weight, std=out_std)
        for linear in (self.attn.qkv, self.attn.proj, self.mlp.fc1, self.mlp.fc2):
            nn.init.zeros_(linear.bias)


def default_num_heads(dim: int) -> int:
    """Heads of width 64 as in the reference (D // 64); for widths that 64 does not divide, the nearest
    smaller head count that divides D."""
    heads = max(dim // 64, 1)
    while dim % heads:
        heads -= 1
    return heads


def default_module_specs(temporal_module: str | None, side_modules: Sequence[Mapping[str, Any]] = ()) -> list[dict]:
    """The ``temporal_module`` shorthand (a module before attention in every block; ``none``: nothing) followed by
    the explicit ``side_modules`` entries, as checked specs."""
    specs: list[dict] = []
    if temporal_module and temporal_module != "none":
        specs.append(check_side_module_spec({"type": temporal_module, "slot": "pre_attn", "blocks": "all"}))
    for entry in side_modules:
        specs.append(check_side_module_spec(dict(entry)))
    return specs


class SideNetwork(nn.Module):
    """Side4Video recognition model: side stem, one side block per tapped backbone layer, [BN]-pool-FC head.

    ``forward(inputs: SideInputs)`` reads the raw frames ``[B, T, 3, H, W]`` and the frozen backbone's tokens of
    the layers in :attr:`backbone_layers`, and returns logits ``[B, num_classes]``. It knows nothing of
    open_clip or timm.

    ``cls_pos_embed=True`` is the retrieval side block (Side4Video's ``Retrieval/`` code): its position embedding
    has ``1+N`` rows and the first is added to the shifted class token before the attention (recognition: ``N``
    rows, patches only). The attention outputs of the patches are the same either way, queries being patches.
    """

    needs_embedding = False

    def __init__(self, backbone: BackboneInfo, num_classes: int, *, side_dim: int = 320,
                 layers: LayerSpec = None, norm: str | None = None, tap_norm: str | None = None,
                 head_norm: bool | None = None, fusion_weight: float = 0.5, temporal_module: str | None = "conv",
                 side_modules: Sequence[Mapping[str, Any]] = (), mlp_ratio: float = 4.0, num_heads: int | None = None,
                 drop_fc: float = 0.0, drop_path: float = 0.0, grad_checkpointing: bool = False,
                 recompute: bool = True, sync_bn: bool = False, causal: bool = False, cls_pos_embed: bool = False):
        super().__init__()
        eva = backbone.family == "eva"
        specs = default_module_specs(temporal_module, side_modules)
        if causal:
            check_causal_form([spec["type"] for spec in specs])
        self.is_causal = causal
        if layers is None:
            layers = "every_other" if eva else "all"
        self.backbone_layers = select_layers(backbone.num_layers, layers)
        if not self.backbone_layers:
            raise ConfigError("network.side_layers selects no backbone layer; the side network needs at least one")
        norm = norm or ("post" if eva else "pre")
        tap_norm = tap_norm or ("output" if eva else "input")
        head_norm = (not eva) if head_norm is None else head_norm
        num_heads = num_heads or default_num_heads(side_dim)
        # inside a checkpointed block nothing is kept anyway: recomputing parts of it again would only cost time
        recompute = recompute and not grad_checkpointing
        self.recompute = recompute
        self.side_dim = side_dim
        self.fusion_weight = fusion_weight
        self.grad_checkpointing = grad_checkpointing
        self.grid = backbone.grid_size
        self.stem = SideStem(side_dim, backbone.patch_size, sync_bn, causal=causal)
        self.taps = nn.ModuleList(TapProjection(backbone.width, side_dim, tap_norm, recompute)
                                  for _ in self.backbone_layers)
        depth = len(self.backbone_layers)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth grows with depth
        plan = module_plan(specs, depth)
        blocks = []
        for index, rate in enumerate(rates):
            provided = {"post_norm": norm == "post", "sync_bn": sync_bn, "drop_path": rate, "recompute": recompute,
                        "causal": causal}
            modules = {slot: [create_side_module(spec, side_dim, provided) for spec in plan[index][slot]]
                       for slot in SLOTS}
            blocks.append(SideBlock(side_dim, num_heads, mlp_ratio=mlp_ratio, norm=norm, drop_path=rate,
                                    sync_bn=sync_bn, recompute=recompute, modules=modules, causal=causal))
        self.blocks = nn.ModuleList(blocks)
        # the retrieval variant (cls_pos_embed) has one more row, for the class token in the side attention
        self.pos_embed = nn.Parameter(torch.zeros(backbone.num_patches + int(cls_pos_embed), side_dim))
        self.head_norm = TokenBatchNorm(side_dim, sync=sync_bn) if head_norm else None
        self.dropout = nn.Dropout(drop_fc)
        self.fc = nn.Linear(side_dim, num_classes)
        self._init_weights(pos_std=0.02 if eva else 0.01)

    @property
    def causal(self) -> bool:
        """Whether no output frame depends on later frames (``network.causal``: stem, class-token shift and every
        side module causal)."""
        return self.is_causal and all(getattr(m, "causal", False) for block in self.blocks
                                      for m in block.side_modules())

    def _init_weights(self, pos_std: float) -> None:
        """Generic init first (norms to identity, projections, blocks), then each side module's own init."""
        nn.init.normal_(self.pos_embed, std=pos_std)
        for tap in self.taps:
            nn.init.normal_(tap.proj.weight, std=(2 * self.side_dim) ** -0.5)
            nn.init.zeros_(tap.proj.bias)
        for block in self.blocks:
            block.init_weights(len(self.blocks))
        for module in self.modules():
            if isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)) and module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)
        for block in self.blocks:
            for module in block.side_modules():
                module.init_weights(len(self.blocks))

    def _layer(self, x: torch.Tensor, cls_tokens: torch.Tensor, patch_tokens: torch.Tensor, index: int,
               grid: tuple[int, int, int, int], history: TemporalHistory | None = None) -> torch.Tensor:
        tap = self.taps[index]
        alpha = self.fusion_weight
        x = (1 - alpha) * x + alpha * tap(patch_tokens)
        ctx = BlockContext(grid=grid, index=index, depth=len(self.blocks), cls=tap(cls_tokens), causal=self.is_causal)
        return self.blocks[index](x, ctx, self.pos_embed, None if history is None else history.scope(f"block{index}"))

    def forward_features(self, inputs: SideInputs) -> torch.Tensor:
        """Pooled side features ``[B, D]``."""
        x = self._side_stream(inputs)
        return x.reshape(inputs.frames.shape[0], -1, self.side_dim).mean(dim=1)

    def frame_features(self, inputs: SideInputs, history: TemporalHistory | None = None) -> torch.Tensor:
        """Per-frame features ``[B, T, D]`` (the head's input before the mean over frames; their mean over T is
        :meth:`forward_features` up to rounding). ``history`` (causal networks): the stream's remembered frames,
        updated in place, so consecutive calls on consecutive frames equal one call on all of them."""
        if history is not None and not self.is_causal:
            raise ValueError("streaming history needs a causal side network (network.causal: true)")
        b, t = inputs.frames.shape[:2]
        x = self._side_stream(inputs, history)
        return x.reshape(b, t, -1, self.side_dim).mean(dim=2)

    def window_logits(self, features: torch.Tensor, window: int) -> torch.Tensor:
        """Per-frame features ``[B, F, D]`` → logits ``[B, F, C]`` of the last ``window`` frames up to each frame
        (fewer at the start): the head's mean over a clip, sliding frame by frame."""
        totals = features.cumsum(dim=1)
        shifted = torch.nn.functional.pad(totals, (0, 0, window, 0))[:, :features.shape[1]]
        counts = torch.arange(1, features.shape[1] + 1, device=features.device).clamp(max=window)
        return self.fc(self.dropout((totals - shifted) / counts[None, :, None].to(features.dtype)))

    def _side_stream(self, inputs: SideInputs, history: TemporalHistory | None = None) -> torch.Tensor:
        """The side stream after the last block (and the head's BatchNorm): ``[B*T, N, D]``."""
        if len(inputs.patch_tokens) != len(self.blocks):
            raise ValueError(f"expected tokens of {len(self.blocks)} backbone layers, got {len(inputs.patch_tokens)}")
        frames = inputs.frames
        b, t = frames.shape[:2]
        grid = (b, t, self.grid, self.grid)
        frames = frames.to(self.stem.conv.weight.dtype)
        recompute = self.training and torch.is_grad_enabled() and (self.recompute or self.grad_checkpointing)
        if history is not None:       # streaming (inference): nothing to recompute, the history is updated once
            x = self.stem(frames, history)
            for index, (cls_tokens, patch_tokens) in enumerate(zip(inputs.cls_tokens, inputs.patch_tokens)):
                x = self._layer(x, cls_tokens, patch_tokens, index, grid, history)
        else:
            # the stem's conv output (kept for its BatchNorm) is recomputed from the frames, kept anyway
            x = checkpoint_without_double_updates(self.stem, frames) if recompute else self.stem(frames)
            for index, (cls_tokens, patch_tokens) in enumerate(zip(inputs.cls_tokens, inputs.patch_tokens)):
                if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    # only the block input (and the tap, alive anyway) is kept; the block is recomputed in backward
                    x = checkpoint_without_double_updates(self._layer, x, cls_tokens, patch_tokens, index, grid)
                else:
                    x = self._layer(x, cls_tokens, patch_tokens, index, grid)
        if self.head_norm is not None:
            x = self.head_norm(x)
        return x

    def forward(self, inputs: SideInputs) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(inputs)))


__all__ = ["SideNetwork", "SideBlock", "SideAttention", "SideMlp", "SideStem", "TapProjection", "shift_cls_in_time",
           "shift_cls_causally",
           "default_num_heads", "default_module_specs"]
