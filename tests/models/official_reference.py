"""The official Side4Video recognition forward, written from its formulas on the official key layout.

Used to check that this toolkit's side network computes the same logits as the reference code, and that
checkpoints written by the official ``train_vision.py`` (``VideoCLIP``: ``visual.*`` + ``fc.*``) load with the
same predictions. Written directly from the reference's equations (``Recognition/clip/model.py`` ``AttnCBlock``,
``Transformer``, ``VisualTransformer``; ``Recognition/eva_clip/eva_vit_model.py``), not imported from it.
BatchNorms use their running statistics (evaluation mode).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _bn(x, state, prefix, dim=1):
    """BatchNorm (eval) over channel ``dim`` with the running statistics in ``state``."""
    shape = [1] * x.dim()
    shape[dim] = -1
    mean, var = state[f"{prefix}.running_mean"].view(shape), state[f"{prefix}.running_var"].view(shape)
    w, b = state[f"{prefix}.weight"].view(shape), state[f"{prefix}.bias"].view(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def _ln(x, state, prefix):
    return F.layer_norm(x, x.shape[-1:], state[f"{prefix}.weight"], state[f"{prefix}.bias"], 1e-5)


def _linear(x, state, prefix):
    return F.linear(x, state[f"{prefix}.weight"], state[f"{prefix}.bias"])


def _shift_token(token, t):
    """[BT, 1, D]: channels [:D/2] of frame t from t+1, [D/2:] from t-1, zero ends (AttnCBlock.shift_token)."""
    d = token.shape[-1]
    fold = d // 2
    seq = token.reshape(-1, t, 1, d)
    out = torch.zeros_like(seq)
    out[:, :-1, :, :fold] = seq[:, 1:, :, :fold]
    out[:, 1:, :, fold:] = seq[:, :-1, :, fold:]
    return out.reshape_as(token)


def _attention(q_in, kv_in, wq, bq, wk, bk, wv, bv, wo, bo, heads):
    m, n, d = q_in.shape
    hd = d // heads
    q = F.linear(q_in, wq, bq).reshape(m, n, heads, hd).transpose(1, 2)
    k = F.linear(kv_in, wk, bk).reshape(m, -1, heads, hd).transpose(1, 2)
    v = F.linear(kv_in, wv, bv).reshape(m, -1, heads, hd).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / hd ** 0.5, dim=-1)
    return F.linear((weights @ v).transpose(1, 2).reshape(m, n, d), wo, bo)


def _stem(frames, state, prefix, patch):
    """side_conv1 (Conv3d 3→D, kernel (3, p, p), stride (1, p, p), temporal padding 1, with bias) + side_pre_bn3d."""
    x = F.conv3d(frames.transpose(1, 2), state[f"{prefix}.side_conv1.weight"], state.get(f"{prefix}.side_conv1.bias"),
                 stride=(1, patch, patch), padding=(1, 0, 0))
    x = _bn(x, state, f"{prefix}.side_pre_bn3d")
    b, d, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, d), (b, t, h, w)


def _temporal_conv(x, state, prefix, grid):
    b, t, h, w = grid
    d = x.shape[-1]
    v = x.reshape(b, t, h, w, d).permute(0, 4, 1, 2, 3)
    return v, lambda out: out.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, d)


def _conv_branch(v, state, prefix):
    d = v.shape[1]
    out = F.conv3d(v, state[f"{prefix}.conv.0.weight"], state[f"{prefix}.conv.0.bias"])
    out = F.conv3d(out, state[f"{prefix}.conv.1.weight"], state[f"{prefix}.conv.1.bias"], padding=(1, 0, 0), groups=d)
    return F.conv3d(out, state[f"{prefix}.conv.2.weight"], state[f"{prefix}.conv.2.bias"])


def official_clip_logits(state: dict, frames: torch.Tensor, layer_tokens: list[torch.Tensor],
                         patch: int) -> torch.Tensor:
    """CLIP recognition model: ``state`` has the official keys without ``module.`` (``visual.transformer.side_*``,
    ``visual.side_*``, ``fc.*``); ``layer_tokens`` are the backbone's per-layer outputs ``[BT, 1+N, W]``."""
    x, grid = _stem(frames, state, "visual", patch)
    t = grid[1]
    pos = state["visual.transformer.side_spatial_position_embeddings"]
    for k, tokens in enumerate(layer_tokens):
        tp = f"visual.transformer.side_transformer.{k}"
        projected = _linear(_ln(tokens, state, f"visual.transformer.side_lns.{k}"), state,
                            f"visual.transformer.side_linears.{k}")
        token, patches = projected[:, :1], projected[:, 1:]
        x = 0.5 * x + 0.5 * patches
        v, back = _temporal_conv(x, state, tp, grid)
        x = back(v + _conv_branch(_bn(v, state, f"{tp}.bn_1"), state, tp))
        xt = _ln(torch.cat([_shift_token(token, t), x + pos], dim=1), state, f"{tp}.ln_1")
        wq, wk, wv = state[f"{tp}.attn.in_proj_weight"].chunk(3)
        bq, bk, bv = state[f"{tp}.attn.in_proj_bias"].chunk(3)
        heads = x.shape[-1] // 64
        x = x + _attention(xt[:, 1:], xt, wq, bq, wk, bk, wv, bv, state[f"{tp}.attn.out_proj.weight"],
                           state[f"{tp}.attn.out_proj.bias"], heads)
        v, back = _temporal_conv(x, state, tp, grid)
        normed = back(_bn(v, state, f"{tp}.bn_2"))
        x = x + _linear(F.gelu(_linear(normed, state, f"{tp}.mlp.fc1")), state, f"{tp}.mlp.fc2")
    v, _ = _temporal_conv(x, state, "", grid)
    pooled = _bn(v, state, "visual.side_post_bn").flatten(2).mean(-1)
    return _linear(pooled, state, "fc")


def official_eva_logits(state: dict, frames: torch.Tensor, layer_tokens: list[torch.Tensor],
                        patch: int) -> torch.Tensor:
    """EVA recognition model (side blocks at the odd layers; ``layer_tokens`` are those layers' outputs):
    Linear → LayerNorm(D) taps, post-norm blocks, separate q/k/v projections, no BatchNorm before the pooling."""
    x, grid = _stem(frames, state, "visual", patch)
    t = grid[1]
    pos = state["visual.side_spatial_position_embeddings"]
    for k, tokens in enumerate(layer_tokens):
        bp = f"visual.side_blocks.{k}"
        projected = _ln(_linear(tokens, state, f"visual.side_linears.{k}"), state, f"visual.side_lns.{k}")
        token, patches = projected[:, :1], projected[:, 1:]
        x = 0.5 * x + 0.5 * patches
        v, back = _temporal_conv(x, state, bp, grid)
        x = back(v + _bn(_conv_branch(v, state, bp), state, f"{bp}.bn_1"))
        xt = torch.cat([_shift_token(token, t), x + pos], dim=1)
        heads = x.shape[-1] // 64
        attn = _attention(xt[:, 1:], xt, state[f"{bp}.attn.q_proj.weight"], state[f"{bp}.attn.q_proj.bias"],
                          state[f"{bp}.attn.k_proj.weight"], state[f"{bp}.attn.k_proj.bias"],
                          state[f"{bp}.attn.v_proj.weight"], state[f"{bp}.attn.v_proj.bias"],
                          state[f"{bp}.attn.proj.weight"], state[f"{bp}.attn.proj.bias"], heads)
        x = x + _ln(attn, state, f"{bp}.ln_1")
        mlp = _linear(F.gelu(_linear(x, state, f"{bp}.mlp.0")), state, f"{bp}.mlp.2")
        v, back = _temporal_conv(mlp, state, bp, grid)
        x = x + back(_bn(v, state, f"{bp}.bn_2"))
    b = grid[0]
    return _linear(x.reshape(b, -1, x.shape[-1]).mean(1), state, "fc")


def _bn_keys(out: dict, ours: dict, src: str, dst: str) -> None:
    for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        out[f"{dst}.{suffix}"] = ours[f"{src}.{suffix}"]


def to_official_layout(ours: dict, family: str, stem_bias: torch.Tensor | None = None) -> dict:
    """This toolkit's side-network state dict → the official ``VideoCLIP`` key layout (side part + fc).

    ``stem_bias``: an official stem conv bias to put in the checkpoint; the running mean of the stem BN is shifted
    by it so that both layouts compute the same function."""
    out: dict = {}
    dim = ours["pos_embed"].shape[1]
    bias = torch.zeros(dim) if stem_bias is None else stem_bias
    out["visual.side_conv1.weight"] = ours["stem.conv.weight"]
    out["visual.side_conv1.bias"] = bias
    _bn_keys(out, ours, "stem.bn", "visual.side_pre_bn3d")
    out["visual.side_pre_bn3d.running_mean"] = ours["stem.bn.running_mean"] + bias
    clip = family == "clip"
    base = "visual.transformer." if clip else "visual."
    out[f"{base}side_spatial_position_embeddings"] = ours["pos_embed"]
    blocks = sorted({int(k.split(".")[1]) for k in ours if k.startswith("blocks.")})
    for k in blocks:
        tap, blk = f"taps.{k}", f"blocks.{k}"
        dst = f"{base}side_transformer.{k}" if clip else f"{base}side_blocks.{k}"
        out[f"{base}side_lns.{k}.weight"] = ours[f"{tap}.norm.weight"]
        out[f"{base}side_lns.{k}.bias"] = ours[f"{tap}.norm.bias"]
        out[f"{base}side_linears.{k}.weight"] = ours[f"{tap}.proj.weight"]
        out[f"{base}side_linears.{k}.bias"] = ours[f"{tap}.proj.bias"]
        _bn_keys(out, ours, f"{blk}.pre_attn.0.norm", f"{dst}.bn_1")
        for i, name in enumerate(("pw_conv1", "dw_conv", "pw_conv2")):
            out[f"{dst}.conv.{i}.weight"] = ours[f"{blk}.pre_attn.0.{name}.weight"]
            out[f"{dst}.conv.{i}.bias"] = ours[f"{blk}.pre_attn.0.{name}.bias"]
        _bn_keys(out, ours, f"{blk}.mlp_norm", f"{dst}.bn_2")
        out[f"{dst}.ln_1.weight"] = ours[f"{blk}.attn_norm.weight"]
        out[f"{dst}.ln_1.bias"] = ours[f"{blk}.attn_norm.bias"]
        fc1, fc2 = ("mlp.fc1", "mlp.fc2") if clip else ("mlp.0", "mlp.2")
        for src, name in ((f"{blk}.mlp.fc1", fc1), (f"{blk}.mlp.fc2", fc2)):
            out[f"{dst}.{name}.weight"], out[f"{dst}.{name}.bias"] = ours[f"{src}.weight"], ours[f"{src}.bias"]
        qkv_w, qkv_b = ours[f"{blk}.attn.qkv.weight"], ours[f"{blk}.attn.qkv.bias"]
        if clip:
            out[f"{dst}.attn.in_proj_weight"], out[f"{dst}.attn.in_proj_bias"] = qkv_w, qkv_b
            out[f"{dst}.attn.out_proj.weight"] = ours[f"{blk}.attn.proj.weight"]
            out[f"{dst}.attn.out_proj.bias"] = ours[f"{blk}.attn.proj.bias"]
        else:
            for part, w, b in zip("qkv", qkv_w.chunk(3), qkv_b.chunk(3)):
                out[f"{dst}.attn.{part}_proj.weight"], out[f"{dst}.attn.{part}_proj.bias"] = w, b
            out[f"{dst}.attn.proj.weight"] = ours[f"{blk}.attn.proj.weight"]
            out[f"{dst}.attn.proj.bias"] = ours[f"{blk}.attn.proj.bias"]
    if clip:
        _bn_keys(out, ours, "head_norm", "visual.side_post_bn")
    out["fc.weight"], out["fc.bias"] = ours["fc.weight"], ours["fc.bias"]
    return out
