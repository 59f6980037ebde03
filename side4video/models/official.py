"""Checkpoints written by the official Side4Video code (``Recognition/train_vision.py``), read as this toolkit's.

The official trainer saves ``{'epoch', 'model_state_dict', 'optimizer_state_dict'}``, where ``model_state_dict``
is the state dict of its ``VideoCLIP``: the whole image tower under ``visual.*`` (the frozen backbone's tensors
*and* the side network's ``visual.side_*`` / ``visual.transformer.side_*``) plus the classifier ``fc.*``; every
key is prefixed ``module.`` when the model was saved through DistributedDataParallel. This module turns such a
checkpoint into this toolkit's layout (``{"model": state dict of SideNetwork, "epoch", "official": {...}}``),
after checking it against the frozen backbone it will run on:

* which family (CLIP / EVA), the side width D, the number of side blocks and of classes follow from the keys;
  family, backbone width W, patch size, patches per frame and block count are checked against ``backbone.info``
  (one-line :class:`~side4video.errors.CheckpointError` naming what differs);
* the backbone tensors in the checkpoint are compared with the frozen backbone (see :func:`compare_backbone`):
  a shape, or a value beyond the tolerance below, is a CheckpointError naming the first differing tensor and by
  how much; checkpoint tensors the backbone has no counterpart for are ignored (and logged), backbone tensors
  missing from the checkpoint are fine;
* the optimizer state is ignored (logged).

``engine.builders.read_trainable_checkpoint`` calls this on the fly (``test.py --weights``, ``tools.predict
--weights``, ``pretrain:``); ``python -m side4video.tools.convert_official`` does it once and writes a checkpoint
in this toolkit's format.

Backbone tolerance: both tensors are rounded to the coarser of their two dtypes (an fp32 official checkpoint
against a bf16 frozen backbone: bf16), then every element must satisfy ``|a - b| <= eps * |b| + 1e-6`` with
``eps`` that dtype's machine epsilon (bf16 2^-7, fp16 2^-10, fp32 2^-23): one unit in the last place, which
allows for a value rounded to bf16 by two routes (fp32 → fp16 → bf16 vs fp32 → bf16); anything a training step
would change fails. Integer tensors must be equal.

Key mapping (official key, without ``module.`` → this toolkit's ``SideNetwork`` key). ``B`` is
``visual.transformer.`` for CLIP and ``visual.`` for EVA; ``S`` is ``visual.transformer.side_transformer.{k}``
(CLIP) or ``visual.side_blocks.{k}`` (EVA); ``{k}`` is the side block index; BatchNorms carry ``weight, bias,
running_mean, running_var, num_batches_tracked``:

==================================  ==================================  ======================
official                            ours                                note
==================================  ==================================  ======================
visual.side_conv1.weight            stem.conv.weight                    Conv3d 3→D, (3, p, p)
visual.side_conv1.bias              (folded into stem.bn.running_mean)  see below
visual.side_pre_bn3d.*              stem.bn.*                           running_mean − bias
B side_spatial_position_embeddings  pos_embed                           [N, D]
B side_lns.{k}.{weight,bias}        taps.{k}.norm.*                     CLIP LN(W), EVA LN(D)
B side_linears.{k}.{weight,bias}    taps.{k}.proj.*                     Linear(W → D)
S.bn_1.*                            blocks.{k}.pre_attn.0.norm.*        temporal conv's BN
S.conv.0.{weight,bias}              blocks.{k}.pre_attn.0.pw_conv1.*    1×1×1, D → D
S.conv.1.{weight,bias}              blocks.{k}.pre_attn.0.dw_conv.*     3×1×1 depthwise
S.conv.2.{weight,bias}              blocks.{k}.pre_attn.0.pw_conv2.*    1×1×1, D → D
S.ln_1.*                            blocks.{k}.attn_norm.*
CLIP S.attn.in_proj_weight          blocks.{k}.attn.qkv.weight          already [q; k; v]
CLIP S.attn.in_proj_bias            blocks.{k}.attn.qkv.bias
CLIP S.attn.out_proj.*              blocks.{k}.attn.proj.*
EVA S.attn.{q,k,v}_proj.weight      blocks.{k}.attn.qkv.weight          cat(q, k, v)
EVA S.attn.{q,k,v}_proj.bias        blocks.{k}.attn.qkv.bias            cat(q, k, v)
EVA S.attn.proj.*                   blocks.{k}.attn.proj.*
S.bn_2.*                            blocks.{k}.mlp_norm.*
CLIP S.mlp.fc1.*, EVA S.mlp.0.*     blocks.{k}.mlp.fc1.*                Linear(D → 4D)
CLIP S.mlp.fc2.*, EVA S.mlp.2.*     blocks.{k}.mlp.fc2.*                Linear(4D → D)
visual.side_post_bn.* (CLIP only)   head_norm.*
fc.{weight,bias}                    fc.*                                [C, D]
visual.<any other key>              (not loaded)                        compared with backbone
fusion_model.*, any other key       (not loaded)                        ignored, logged
==================================  ==================================  ======================

Side block k taps backbone layer k (CLIP: every layer) or 2k+1 (EVA: every other layer, the official
``drop_layer = range(0, depth, 2)``), i.e. ``network.side_layers`` ``all`` / ``every_other``, the defaults.
The official attention has D // 64 heads, what this toolkit's default (``default_num_heads``) gives for every D
the official code accepts; the fusion weight is 0.5, the default ``network.fusion_weight``.

Deliberate differences, none of which changes the function computed:

* the stem conv has no bias here (BatchNorm follows it): the official ``side_conv1.bias`` is folded into the stem
  BatchNorm's running mean, ``running_mean_ours = running_mean_official − bias``. Exact in eval mode; in train mode
  the batch statistics absorb the bias (and the running mean then tracks the bias-free mean, consistently).
* the official CLIP init (its loop names ``pw_conv1`` / ``dw_conv1`` that do not exist, a hard-coded depth of 12)
  and its weight-decay grouping only matter when training from scratch: loading replaces every initial value, and
  the optimizer state is not carried over. The official EVA tower runs its side blocks only under
  ``grad_checkpointing`` (its default, on) and checkpoints them; recomputation changes no value, and this
  toolkit always runs them (``network.grad_checkpointing`` only trades memory for time).
* the backbone's tensors are not loaded from the checkpoint: the frozen backbone comes from ``clip_pretrain/``
  (``network.pretrained``) and the checkpoint's copy is only compared with it.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import torch

from ..backbones.factory import backbone_identity
from ..backbones.weights import convert_to_model_keys
from ..errors import CheckpointError

log = logging.getLogger(__name__)

MODULE_PREFIX = "module."
#: element-wise tolerance on backbone tensors: ``|a - b| <= eps(dtype) * |b| + BACKBONE_ATOL``
BACKBONE_ATOL = 1e-6
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_SIDE_KEY = re.compile(r"^visual\.(transformer\.)?side_")
_SHOWN = 6   # names listed in a log line


# -- recognising and unwrapping ---------------------------------------------------------------------------------
def _strip_prefix(key: str) -> str:
    while key.startswith(MODULE_PREFIX):
        key = key[len(MODULE_PREFIX):]
    return key


def _model_state(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``VideoCLIP`` state dict inside a checkpoint (``model_state_dict``, or the checkpoint itself when it is a
    bare state dict), or None."""
    state = checkpoint.get("model_state_dict")
    if isinstance(state, dict):
        return state
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return dict(checkpoint)
    return None


def is_official_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    """True for what the official ``train_vision.py`` writes: ``{'epoch', 'model_state_dict': {'visual.side_*', ...,
    'fc.*'}, 'optimizer_state_dict'}`` (``module.``-prefixed or not), or that ``model_state_dict`` on its own."""
    if not isinstance(checkpoint, Mapping):
        return False
    state = _model_state(checkpoint)
    if state is None:
        return False
    keys = [_strip_prefix(k) for k in state if isinstance(k, str)]
    if "model_state_dict" in checkpoint:
        return any(_SIDE_KEY.match(k) for k in keys)
    return "visual.side_conv1.weight" in keys     # a bare state dict: only with the official stem


def official_state_dict(checkpoint: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], bool]:
    """The official model state dict with ``module.`` prefixes stripped, and whether there were any."""
    state = _model_state(checkpoint)
    if state is None:
        raise CheckpointError("not an official Side4Video checkpoint (no 'model_state_dict')")
    stripped = {_strip_prefix(k): v for k, v in state.items()}
    if len(stripped) != len(state):
        raise CheckpointError("the official checkpoint holds the same key with and without the 'module.' prefix")
    return stripped, any(k.startswith(MODULE_PREFIX) for k in state)


def official_family(state: Mapping[str, Any]) -> str:
    """``clip`` (side tensors under ``visual.transformer.side_*``) or ``eva`` (``visual.side_blocks.*``)."""
    clip = any(k.startswith("visual.transformer.side_") for k in state)
    eva = any(k.startswith("visual.side_blocks.") for k in state)
    if clip == eva:
        raise CheckpointError("cannot tell whether this official Side4Video checkpoint is for a CLIP backbone "
                              "(visual.transformer.side_*) or an EVA one (visual.side_blocks.*): "
                              + ("it has both" if clip else "it has neither"))
    return "clip" if clip else "eva"


# -- the side network -------------------------------------------------------------------------------------------
class _Reader:
    """Takes tensors out of the official state dict by name, remembering what was used."""

    def __init__(self, state: Mapping[str, torch.Tensor], source: str):
        self.state, self.source, self.used = state, source, set()

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise CheckpointError(f"{self.source}: the official checkpoint lacks {key} (incomplete, or not written by "
                                  "the official train_vision.py)")
        self.used.add(key)
        value = self.state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{self.source}: {key} is a {type(value).__name__}, not a tensor")
        value = value.detach()
        return value.float() if value.is_floating_point() else value

    def copy(self, out: dict, src: str, dst: str, suffixes=("weight", "bias")) -> None:
        for suffix in suffixes:
            out[f"{dst}.{suffix}"] = self.take(f"{src}.{suffix}")

    def batch_norm(self, out: dict, src: str, dst: str) -> None:
        for suffix in _BN_SUFFIXES:
            if suffix == "num_batches_tracked" and not self.has(f"{src}.{suffix}"):
                out[f"{dst}.{suffix}"] = torch.tensor(0)        # older PyTorch versions did not store it
            else:
                out[f"{dst}.{suffix}"] = self.take(f"{src}.{suffix}")


def _block_indices(state: Mapping[str, Any], prefix: str, source: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = sorted({int(m.group(1)) for k in state for m in [pattern.match(k)] if m})
    if found != list(range(len(found))):
        raise CheckpointError(f"{source}: the official side blocks {prefix}N are numbered {found}, not 0..n-1")
    return found


def convert_side_state(state: Mapping[str, torch.Tensor], family: str,
                       source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], set[str], bool]:
    """The official side tensors + ``fc`` → this toolkit's ``SideNetwork`` state dict (fp32 floats).

    Returns ``(ours, official keys used, whether a stem bias was folded)``. Official side tensors that the mapping
    does not know are an error (they would otherwise be dropped silently)."""
    read = _Reader(state, source)
    clip = family == "clip"
    base = "visual.transformer." if clip else "visual."
    blocks_prefix = f"{base}side_transformer." if clip else f"{base}side_blocks."
    ours: dict[str, torch.Tensor] = {"stem.conv.weight": read.take("visual.side_conv1.weight")}
    read.batch_norm(ours, "visual.side_pre_bn3d", "stem.bn")
    folded = read.has("visual.side_conv1.bias")
    if folded:
        bias = read.take("visual.side_conv1.bias")
        ours["stem.bn.running_mean"] = ours["stem.bn.running_mean"] - bias
    ours["pos_embed"] = read.take(f"{base}side_spatial_position_embeddings")
    indices = _block_indices(state, blocks_prefix, source)
    taps = _block_indices(state, f"{base}side_linears.", source)
    if not indices:
        raise CheckpointError(f"{source}: the official checkpoint has no side blocks ({blocks_prefix}N)")
    if taps != indices:
        raise CheckpointError(f"{source}: {len(taps)} side projections ({base}side_linears.N) for {len(indices)} "
                              "side blocks")
    for k in indices:
        src, dst = f"{blocks_prefix}{k}", f"blocks.{k}"
        read.copy(ours, f"{base}side_lns.{k}", f"taps.{k}.norm")
        read.copy(ours, f"{base}side_linears.{k}", f"taps.{k}.proj")
        read.batch_norm(ours, f"{src}.bn_1", f"{dst}.pre_attn.0.norm")
        for i, name in enumerate(("pw_conv1", "dw_conv", "pw_conv2")):
            read.copy(ours, f"{src}.conv.{i}", f"{dst}.pre_attn.0.{name}")
        read.copy(ours, f"{src}.ln_1", f"{dst}.attn_norm")
        if clip:
            ours[f"{dst}.attn.qkv.weight"] = read.take(f"{src}.attn.in_proj_weight")
            ours[f"{dst}.attn.qkv.bias"] = read.take(f"{src}.attn.in_proj_bias")
            read.copy(ours, f"{src}.attn.out_proj", f"{dst}.attn.proj")
        else:
            for suffix in ("weight", "bias"):
                ours[f"{dst}.attn.qkv.{suffix}"] = torch.cat(
                    [read.take(f"{src}.attn.{part}_proj.{suffix}") for part in "qkv"])
            read.copy(ours, f"{src}.attn.proj", f"{dst}.attn.proj")
        read.batch_norm(ours, f"{src}.bn_2", f"{dst}.mlp_norm")
        fc1, fc2 = ("mlp.fc1", "mlp.fc2") if clip else ("mlp.0", "mlp.2")
        read.copy(ours, f"{src}.{fc1}", f"{dst}.mlp.fc1")
        read.copy(ours, f"{src}.{fc2}", f"{dst}.mlp.fc2")
    if clip:
        read.batch_norm(ours, "visual.side_post_bn", "head_norm")
    read.copy(ours, "fc", "fc")
    unknown = [k for k in state if _SIDE_KEY.match(k) and k not in read.used]
    if unknown:
        listed = ", ".join(unknown[:_SHOWN]) + (" ..." if len(unknown) > _SHOWN else "")
        raise CheckpointError(f"{source}: the official checkpoint holds {len(unknown)} side tensor(s) that the "
                              f"{family.upper()} Side4Video layout does not have: {listed}")
    return ours, read.used, folded


def check_against_backbone(ours: Mapping[str, torch.Tensor], family: str, info, source: str = "checkpoint") -> None:
    """Family, backbone width, patch size, patches per frame and side block count of the converted checkpoint
    against ``info`` (a :class:`~side4video.backbones.frozen.BackboneInfo`); one-line CheckpointError."""
    what = f"{source} is an official Side4Video checkpoint"
    if family != info.family:
        raise CheckpointError(f"{what} for a {family.upper()} backbone, but network.arch {info.arch} is "
                              f"{'an' if info.family == 'eva' else 'a'} {info.family.upper()} backbone")
    width = ours["taps.0.proj.weight"].shape[1]
    if width != info.width:
        raise CheckpointError(f"{what} trained on a backbone of width {width} (side_linears.0: Linear({width} → "
                              f"{ours['taps.0.proj.weight'].shape[0]})), but {info.arch} has width {info.width}")
    patch = ours["stem.conv.weight"].shape[-1]
    if patch != info.patch_size:
        raise CheckpointError(f"{what} for patches of {patch} px (side_conv1), but {info.arch} uses {info.patch_size} "
                              "px patches")
    patches = ours["pos_embed"].shape[0]
    if patches != info.num_patches:
        raise CheckpointError(f"{what} for {patches} patches per frame (side_spatial_position_embeddings), but "
                              f"{info.arch} at {info.image_size} px has {info.num_patches}")
    blocks = len({k.split(".")[1] for k in ours if k.startswith("blocks.")})
    expected = len(official_backbone_layers(family, info.num_layers))
    if blocks != expected:
        rule = "one on every layer" if family == "clip" else "one on every other layer"
        raise CheckpointError(f"{what} with {blocks} side blocks, but the official code puts {expected} on a "
                              f"{info.num_layers}-layer {info.arch} ({rule})")


def official_backbone_layers(family: str, num_layers: int) -> list[int]:
    """The backbone layers whose outputs feed the official side blocks (CLIP: all; EVA: 1, 3, 5, ...)."""
    return list(range(num_layers)) if family == "clip" else list(range(1, num_layers, 2))


# -- the backbone -----------------------------------------------------------------------------------------------
def _coarser(a: torch.dtype, b: torch.dtype) -> torch.dtype:
    return a if torch.finfo(a).eps >= torch.finfo(b).eps else b


def compare_backbone(state: Mapping[str, torch.Tensor], backbone, source: str = "checkpoint") -> dict[str, Any]:
    """Compare the official checkpoint's backbone tensors (``visual.*`` but the side ones) with the frozen backbone.

    Their names go through the same conversion as the backbone's own weight files (``convert_to_model_keys``:
    OpenAI names as they are, BAAI EVA names through timm's filter). Raises a CheckpointError naming the first
    tensor (in checkpoint order) whose shape, or values beyond the tolerance of this module's docstring, differ.
    Returns ``{"compared": n, "ignored": [official keys without a counterpart in the frozen backbone]}``."""
    official = {k: v for k, v in state.items()
                if k.startswith("visual.") and not _SIDE_KEY.match(k) and isinstance(v, torch.Tensor)}
    if not official:
        return {"compared": 0, "ignored": []}
    name_of = {id(v): k for k, v in official.items()}      # the conversion renames keys, but keeps the tensors
    try:
        converted = convert_to_model_keys(dict(official), backbone.model)
    except Exception as exc:  # a layout the backbone's converter cannot read
        raise CheckpointError(f"{source}: cannot map the official checkpoint's backbone tensors onto "
                              f"{backbone.info.arch}: {str(exc).splitlines()[0][:200]}") from None
    reference = backbone.model.state_dict()
    arch = backbone.info.arch
    compared: set[int] = set()
    for key, value in converted.items():
        target = reference.get(key)
        if target is None:
            continue
        name = name_of.get(id(value), key)
        shown = name if name == key else f"{name} (backbone {key})"
        if tuple(value.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: backbone tensor {shown} has shape {tuple(value.shape)} in the official "
                                  f"checkpoint but {tuple(target.shape)} in the frozen backbone {arch}; network.arch "
                                  "names another model than the one it was trained on")
        problem = _difference(value, target)
        if problem:
            weights = backbone.info.weights or "random weights"
            raise CheckpointError(f"{source}: backbone tensor {shown} differs from the frozen backbone {arch} "
                                  f"({weights}): {problem}; the official run did not keep this backbone frozen, or "
                                  "network.pretrained names other weights")
        compared.add(id(value))
    ignored = [k for k, v in official.items() if id(v) not in compared]
    return {"compared": len(compared), "ignored": ignored}


def _difference(value: torch.Tensor, target: torch.Tensor) -> str | None:
    """None when ``value`` (the checkpoint's) matches ``target`` (the backbone's) within the tolerance, else how
    they differ."""
    value = value.detach().to(target.device)
    target = target.detach()
    if not (value.is_floating_point() and target.is_floating_point()):
        return None if torch.equal(value, target.to(value.dtype)) else "the values differ (integer tensor)"
    dtype = _coarser(value.dtype, target.dtype)
    eps = torch.finfo(dtype).eps
    a, b = value.to(dtype).float(), target.to(dtype).float()
    diff = (a - b).abs()
    within = diff <= eps * b.abs() + BACKBONE_ATOL
    if bool(within.all()):
        return None
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    worst = float(diff.max())
    relative = float((diff / b.abs().clamp_min(1e-12)).max())
    outside = int((~within).sum())
    return (f"max |difference| {worst:.3g} (relative {relative:.3g}) in {outside} of {b.numel()} values, beyond "
            f"|a - b| <= {eps:.3g}·|b| + {BACKBONE_ATOL:g} ({str(dtype).replace('torch.', '')} rounding)")


# -- the whole checkpoint ---------------------------------------------------------------------------------------
def convert_official_checkpoint(checkpoint: Mapping[str, Any], backbone, source: Any = None) -> dict[str, Any]:
    """An official Side4Video checkpoint → this toolkit's checkpoint layout, checked against ``backbone`` (a
    :class:`~side4video.backbones.FrozenEncoder`).

    Returns ``{"model": SideNetwork state dict, "epoch", "head": "side4video", "num_classes", "official": {...}}``
    plus ``"backbone"`` (the identity of ``backbone``) when the checkpoint's backbone tensors were compared with it
    and matched. Raises :class:`CheckpointError` (one line) when it belongs to another backbone."""
    source = str(source) if source is not None else "checkpoint"
    state, prefixed = official_state_dict(checkpoint)
    family = official_family(state)
    ours, used, folded = convert_side_state(state, family, source)
    info = backbone.info
    check_against_backbone(ours, family, info, source)
    report = compare_backbone(state, backbone, source)
    others = [k for k in state if not k.startswith("visual.") and k not in used]
    num_classes, side_dim = (int(n) for n in ours["fc.weight"].shape)
    num_blocks = len({k.split(".")[1] for k in ours if k.startswith("blocks.")})
    epoch = checkpoint.get("epoch") if isinstance(checkpoint.get("epoch"), (int, float)) else None
    tolerance = f"|a - b| <= eps(coarser dtype)·|b| + {BACKBONE_ATOL:g}"
    details = {
        "source": source, "family": family, "epoch": epoch, "side_dim": side_dim, "num_blocks": num_blocks,
        "num_heads": side_dim // 64, "num_classes": num_classes,
        "backbone_layers": official_backbone_layers(family, info.num_layers),
        "module_prefix": prefixed, "stem_bias_folded": folded,
        "backbone_tensors_compared": report["compared"], "backbone_tolerance": tolerance,
        "ignored": report["ignored"] + others,
        "optimizer_state": "ignored" if "optimizer_state_dict" in checkpoint else "absent",
    }
    converted: dict[str, Any] = {"model": ours, "epoch": epoch, "head": "side4video", "num_classes": num_classes,
                                 "official": details}
    if report["compared"]:
        converted["backbone"] = backbone_identity(backbone)
    _log_conversion(details, info.arch, len(state))
    return converted


def _listing(names: list[str]) -> str:
    return ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _log_conversion(details: dict[str, Any], arch: str, total: int) -> None:
    compared, ignored = details["backbone_tensors_compared"], details["ignored"]
    epoch = details["epoch"]
    log.info(f"{details['source']}: official Side4Video checkpoint ({details['family'].upper()}, side width "
             f"{details['side_dim']}, {details['num_blocks']} side blocks, {details['num_classes']} classes"
             + (f", epoch {epoch}" if epoch is not None else "") + ") converted"
             + ("; stem conv bias folded into the stem BatchNorm's running mean" if details["stem_bias_folded"] else "")
             + f"; {compared} backbone tensors match the frozen {arch} ({details['backbone_tolerance']})"
             + (f"; {len(ignored)} of its {total} tensors ignored, no counterpart in the frozen backbone or the side "
                f"network: {_listing(ignored)}" if ignored else "")
             + ("; optimizer state ignored" if details["optimizer_state"] == "ignored" else ""))
    backbone_keys = [k for k in ignored if k.startswith("visual.")]
    if not compared:
        log.warning(f"{details['source']}: none of the official checkpoint's tensors could be compared with the "
                    f"frozen backbone {arch}" + (f" ({len(backbone_keys)} backbone tensors have no counterpart in "
                                                   "it)" if backbone_keys else " (it holds no backbone tensors)")
                    + "; its side network is used as it is")


__all__ = ["is_official_checkpoint", "convert_official_checkpoint", "official_state_dict", "official_family",
           "convert_side_state", "check_against_backbone", "compare_backbone", "official_backbone_layers",
           "BACKBONE_ATOL"]
