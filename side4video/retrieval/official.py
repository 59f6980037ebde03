"""Checkpoints written by the official Side4Video retrieval code (``Retrieval/main_task_retrieval.py``), read as
this toolkit's :class:`~side4video.retrieval.model.RetrievalModel` weights.

The official trainer saves ``pytorch_model.bin.<epoch>`` as the bare ``state_dict()`` of its ``CLIP4Clip`` model
(taken from ``model.module`` first, so normally without ``module.``; the prefix is stripped if present): the whole
CLIP under ``clip.*`` (frozen image tower, side network ``clip.visual.side_*`` /
``clip.visual.transformer.side_*``, text tower, ``clip.logit_scale``) plus the WTI weight networks
``text_weight_fc.*`` / ``video_weight_fc.*``. The optimizer goes to a separate ``pytorch_opt.bin.<epoch>``, which
is not needed (and not read). The epoch is only in the file name, so the converted checkpoint has ``epoch: None``.

What the official run trained, and how each part is treated here (its script: ``--freeze_vit_encoder``,
``--freeze_layer_num 0``, ``--coef_lr 1e-3``, ``--lr 1e-4``):

* the side network, ``side_proj``, the WTI networks: trained at the full rate → mapped onto ours (table below);
* ``clip.logit_scale``: trained at 1e-7 → mapped (``logit_scale``, a scalar there, shape ``[1]`` here);
* the image tower but ``ln_post`` / ``proj``: frozen → compared with the frozen backbone exactly as recognition's
  converter does (:func:`~side4video.models.official.compare_backbone`: one unit in the last place of the coarser
  dtype; the official model stores its Linear/Conv weights in fp16, which this rule accepts);
* ``clip.visual.ln_post.*``, ``clip.visual.proj`` and the whole text tower: *fine-tuned* at lr × coef_lr = 1e-7
  (the freeze loop re-enables ``ln_post`` / ``proj``). Adam moves a weight by at most about the learning rate per
  step, so a few thousand steps drift it by ~1e-4..1e-3 (fp16 weights mostly not at all: the update is below half
  an fp16 unit). Decision: they are compared with this toolkit's own copies under ``|a - b| <= eps·|b| +
  finetuned_atol`` (``FINETUNED_ATOL`` = 5e-3 by default, i.e. up to ~50k steps at 1e-7, far below the differences
  between two CLIP weight files); beyond it the checkpoint was trained from other CLIP weights: one-line
  CheckpointError (``finetuned_atol=float("inf")`` accepts any drift). The largest difference is reported
  (``official["finetuned"]``, and logged). The toolkit's frozen copies are then used: ``ln_post`` / ``proj``
  belong to the frozen image tower (never loaded from a checkpoint), and so does a frozen text tower; a
  *trainable* text tower (``train_text``, passed as ``text_tower``) takes the checkpoint's fine-tuned text tower
  instead (``text.model.*``), since it is part of what trains and is saved. The text tower is compared only when
  one is available (``text_tower``, or a backbone built with ``keep_text_tower``); otherwise it is reported as not
  compared.

Key mapping (official key without ``module.`` → ``RetrievalModel.state_dict()`` key). ``V`` is ``clip.visual.``,
``T`` is ``clip.visual.transformer.``, ``S`` is ``T side_transformer.{k}`` (side block k, on backbone layer k: the
official ``side_layers_mode = 'all'``); BatchNorms carry ``weight, bias, running_mean, running_var,
num_batches_tracked``:

====================================  ===================================  ==========================================
official                              ours                                 note
====================================  ===================================  ==========================================
V side_conv1.weight                   side.stem.conv.weight                Conv3d 3→D, (3, p, p)
V side_conv1.bias                     (folded into side.stem.bn)           running_mean − bias, as recognition
V side_pre_bn3d.*                     side.stem.bn.*
T side_spatial_position_embeddings    side.pos_embed                       [1+N, D]: row 0 for the class token
T side_lns.{k}.*                      side.taps.{k}.norm.*                 LayerNorm(W)
T side_linears.{k}.*                  side.taps.{k}.proj.*                 Linear(W → D)
S.norm1.*                             side.blocks.{k}.pre_attn.0.norm.*    BN before the temporal conv
S.pw_conv1.*                          side.blocks.{k}.pre_attn.0.pw_conv1.*
S.dw_conv1.*                          side.blocks.{k}.pre_attn.0.dw_conv.* 3×1×1 depthwise
S.pw_conv2.*                          side.blocks.{k}.pre_attn.0.pw_conv2.*
S.ln_1.*                              side.blocks.{k}.attn_norm.*
S.attn.in_proj_{weight,bias}          side.blocks.{k}.attn.qkv.*           already [q; k; v]
S.attn.out_proj.*                     side.blocks.{k}.attn.proj.*
S.norm2.*                             side.blocks.{k}.mlp_norm.*
S.mlp.fc1.*, S.mlp.fc2.*              side.blocks.{k}.mlp.fc1.*, fc2.*
V side_post_bn.*                      side.head_norm.*
V side_proj                           side.side_proj.weight                [D, W] matrix (x @ P) → transposed [W, D]
text_weight_fc.{0,2}.*                wti.text_weight_fc.{0,2}.*           Linear(E, E), ReLU, Linear(E, 1)
video_weight_fc.{0,2}.*               wti.video_weight_fc.{0,2}.*
clip.logit_scale                      logit_scale                          [] → [1]
V ln_post.*, V proj                   (not loaded)                         fine-tuned: compared, drift reported
clip.<text tower>                     text.model.<same> if trainable       else compared, drift reported
V <any other key>                     (not loaded)                         frozen: compared with the backbone
any other key                         (not loaded)                         ignored, logged
====================================  ===================================  ==========================================

Refused with a one-line :class:`~side4video.errors.CheckpointError`: EVA-CLIP retrieval checkpoints
(``clip.visual.side_blocks.*``, a different side network that this converter does not map), checkpoints whose WTI
runs a temporal transformer first (``side_transformerClip.*``, ``--sim_header seqTransf``), and any side tensor the
table does not name. Without WTI networks (``--interaction`` other than ``wti``) the model is converted without
``wti.*`` (``official["sim_header"] = "meanP"``); it then loads into a ``sim_header: meanP`` model only.

The official attention has D // 64 heads, what this toolkit's default gives for every D the official code accepts;
the fusion weight is 0.5 and the class-token row of the position embedding is added before the side attention,
both :class:`~side4video.retrieval.head.RetrievalSideNetwork`'s defaults.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import torch

from ..backbones.factory import backbone_identity
from ..backbones.frozen import FrozenEncoder
from ..errors import CheckpointError
from ..models.official import (
    BACKBONE_ATOL,
    _block_indices,
    _coarser,
    _Reader,
    _strip_prefix,
    compare_backbone,
    official_state_dict,
)
from .text import FrozenTextTower

__all__ = ["is_official_retrieval_checkpoint", "convert_official_retrieval_checkpoint",
           "convert_retrieval_side_state", "FINETUNED_ATOL", "CLIP_PREFIX"]

log = logging.getLogger(__name__)

CLIP_PREFIX = "clip."
#: absolute part of the tolerance on tensors the official run fine-tuned at 1e-7 (see the module docstring)
FINETUNED_ATOL = 5e-3
#: image-tower tensors the official freeze loop re-enables (trained at lr × coef_lr), relative to ``clip.``
FINETUNED_VISUAL = ("visual.ln_post.weight", "visual.ln_post.bias", "visual.proj")
WTI_NETWORKS = ("text_weight_fc", "video_weight_fc")
#: where a trainable text tower's weights sit in RetrievalModel.state_dict() (``self.text`` → ``FrozenTextTower.model``)
TEXT_TOWER_PREFIX = "text.model."
_SIDE_KEY = re.compile(r"^visual\.(transformer\.)?side_")
_OFFICIAL_SIDE_KEY = re.compile(r"^clip\.visual\.(transformer\.)?side_")
_SIDE_BLOCKS = "visual.transformer.side_transformer."
_SHOWN = 6


# -- recognising ------------------------------------------------------------------------------------------------
def is_official_retrieval_checkpoint(obj: Any) -> bool:
    """True for what the official ``main_task_retrieval.py`` saves: a bare state dict of tensors holding
    ``clip.visual.side_*`` / ``clip.visual.transformer.side_*`` (``module.``-prefixed or not).

    Distinct from recognition's format (:func:`side4video.models.official.is_official_checkpoint`): that one is a
    ``model_state_dict`` (or bare) dict of ``visual.side_*`` keys without the ``clip.`` prefix."""
    if not isinstance(obj, Mapping) or not obj or "model_state_dict" in obj:
        return False
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return False
    return any(isinstance(k, str) and _OFFICIAL_SIDE_KEY.match(_strip_prefix(k)) for k in obj)


# -- the side network -------------------------------------------------------------------------------------------
class _RetrievalReader(_Reader):
    """Recognition's reader (takes tensors by name, fp32, remembering which were used), with this format's name
    for a missing tensor (keys are read relative to ``clip.``)."""

    def take(self, key: str) -> torch.Tensor:
        if key not in self.state:
            raise CheckpointError(f"{self.source}: the official retrieval checkpoint lacks {CLIP_PREFIX}{key} "
                                  "(incomplete, or not written by the official main_task_retrieval.py)")
        return super().take(key)


def convert_retrieval_side_state(clip_state: Mapping[str, torch.Tensor],
                                 source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], bool]:
    """The official side tensors (``clip_state``: keys without ``clip.``) → a ``RetrievalSideNetwork`` state dict
    (keys without ``side.``, fp32). Returns ``(state, whether a stem conv bias was folded)``.

    Recognition's ``convert_side_state`` cannot be reused as it is: the retrieval blocks name their temporal conv
    ``norm1`` / ``pw_conv1`` / ``dw_conv1`` / ``pw_conv2`` / ``norm2`` (recognition: ``bn_1`` / ``conv.N`` /
    ``bn_2``), there is no classifier, and ``side_proj`` is added."""
    read = _RetrievalReader(clip_state, source)
    ours: dict[str, torch.Tensor] = {"stem.conv.weight": read.take("visual.side_conv1.weight")}
    read.batch_norm(ours, "visual.side_pre_bn3d", "stem.bn")
    folded = read.has("visual.side_conv1.bias")
    if folded:
        # BatchNorm (eval) follows the conv: BN(conv(x) + b) with mean μ is BN(conv(x)) with mean μ - b
        ours["stem.bn.running_mean"] = ours["stem.bn.running_mean"] - read.take("visual.side_conv1.bias")
    ours["pos_embed"] = read.take("visual.transformer.side_spatial_position_embeddings")
    blocks = _block_indices(clip_state, _SIDE_BLOCKS, source)
    taps = _block_indices(clip_state, "visual.transformer.side_linears.", source)
    if not blocks:
        raise CheckpointError(f"{source}: the official retrieval checkpoint has no side blocks "
                              f"({CLIP_PREFIX}{_SIDE_BLOCKS}N)")
    if taps != blocks:
        raise CheckpointError(f"{source}: {len(taps)} side projections (side_linears.N) for {len(blocks)} side blocks")
    for k in blocks:
        src, dst = f"{_SIDE_BLOCKS}{k}", f"blocks.{k}"
        read.copy(ours, f"visual.transformer.side_lns.{k}", f"taps.{k}.norm")
        read.copy(ours, f"visual.transformer.side_linears.{k}", f"taps.{k}.proj")
        read.batch_norm(ours, f"{src}.norm1", f"{dst}.pre_attn.0.norm")
        for official, mine in (("pw_conv1", "pw_conv1"), ("dw_conv1", "dw_conv"), ("pw_conv2", "pw_conv2")):
            read.copy(ours, f"{src}.{official}", f"{dst}.pre_attn.0.{mine}")
        read.copy(ours, f"{src}.ln_1", f"{dst}.attn_norm")
        # nn.MultiheadAttention packs [q; k; v] in one matrix, the layout of our qkv Linear
        ours[f"{dst}.attn.qkv.weight"] = read.take(f"{src}.attn.in_proj_weight")
        ours[f"{dst}.attn.qkv.bias"] = read.take(f"{src}.attn.in_proj_bias")
        read.copy(ours, f"{src}.attn.out_proj", f"{dst}.attn.proj")
        read.batch_norm(ours, f"{src}.norm2", f"{dst}.mlp_norm")
        read.copy(ours, f"{src}.mlp.fc1", f"{dst}.mlp.fc1")
        read.copy(ours, f"{src}.mlp.fc2", f"{dst}.mlp.fc2")
    read.batch_norm(ours, "visual.side_post_bn", "head_norm")
    # the official side_proj is a [D, W] matrix applied as x @ P; ours is Linear(D → W), whose weight is [W, D]
    ours["side_proj.weight"] = read.take("visual.side_proj").t().contiguous()
    unknown = [k for k in clip_state if _SIDE_KEY.match(k) and k not in read.used]
    if unknown:
        listed = ", ".join(CLIP_PREFIX + k for k in unknown[:_SHOWN]) + (" ..." if len(unknown) > _SHOWN else "")
        raise CheckpointError(f"{source}: the official retrieval checkpoint holds {len(unknown)} side tensor(s) "
                              f"that the Side4Video CLIP retrieval layout does not have: {listed}")
    return ours, folded


def _check_side_against_backbone(side: Mapping[str, torch.Tensor], info, source: str) -> None:
    """Backbone width, patch size, patches per frame and block count of the converted side network against
    ``info`` (a :class:`~side4video.backbones.frozen.BackboneInfo`); one-line CheckpointError."""
    what = f"{source} is an official Side4Video retrieval checkpoint"
    width = side["taps.0.proj.weight"].shape[1]
    if width != info.width:
        raise CheckpointError(f"{what} trained on a backbone of width {width} (side_linears.0: Linear({width} → "
                              f"{side['taps.0.proj.weight'].shape[0]})), but {info.arch} has width {info.width}")
    if side["side_proj.weight"].shape[0] != info.width:
        raise CheckpointError(f"{what} whose side_proj adds to class tokens of width "
                              f"{side['side_proj.weight'].shape[0]}, but {info.arch} has width {info.width}")
    patch = side["stem.conv.weight"].shape[-1]
    if patch != info.patch_size:
        raise CheckpointError(f"{what} for patches of {patch} px (side_conv1), but {info.arch} uses "
                              f"{info.patch_size} px patches")
    rows = side["pos_embed"].shape[0]
    if rows != info.num_patches + 1:
        raise CheckpointError(f"{what} for {rows - 1} patches per frame (side_spatial_position_embeddings has "
                              f"{rows} rows), but {info.arch} at {info.image_size} px has {info.num_patches}")
    blocks = len({k.split(".")[1] for k in side if k.startswith("blocks.")})
    if blocks != info.num_layers:
        raise CheckpointError(f"{what} with {blocks} side blocks, but the official code puts one on every layer "
                              f"of the {info.num_layers}-layer {info.arch}")


def _convert_wti(top: Mapping[str, torch.Tensor], embed_dim: int, source: str) -> dict[str, torch.Tensor]:
    """``text_weight_fc.*`` / ``video_weight_fc.*`` → ``wti.*`` (empty when the run did not use WTI)."""
    present = [net for net in WTI_NETWORKS if any(k.startswith(f"{net}.") for k in top)]
    if not present:
        return {}
    if len(present) != len(WTI_NETWORKS):
        raise CheckpointError(f"{source}: the official retrieval checkpoint has {present[0]} but not "
                              f"{[n for n in WTI_NETWORKS if n not in present][0]}; WTI needs both")
    read = _Reader(top, source)
    out: dict[str, torch.Tensor] = {}
    for net in WTI_NETWORKS:
        for layer in ("0", "2"):     # Linear(E, E), ReLU, Linear(E, 1): the ReLU has no weights
            read.copy(out, f"{net}.{layer}", f"wti.{net}.{layer}")
    width = out["wti.text_weight_fc.0.weight"].shape[1]
    if width != embed_dim:
        raise CheckpointError(f"{source}: the official WTI networks read {width}-d embeddings, but the backbone "
                              f"embeds into {embed_dim} dimensions")
    return out


# -- tensors the official run fine-tuned at 1e-7 ------------------------------------------------------------------
def _drift(name: str, value: torch.Tensor, target: torch.Tensor, atol: float, source: str, what: str) -> float:
    """Max |checkpoint - ours| of a fine-tuned tensor (both rounded to the coarser dtype); CheckpointError when a
    value differs by more than ``eps·|ours| + atol``."""
    if tuple(value.shape) != tuple(target.shape):
        raise CheckpointError(f"{source}: {what} tensor {CLIP_PREFIX}{name} has shape {tuple(value.shape)} in the "
                              f"official checkpoint but {tuple(target.shape)} here; network.arch names another model")
    dtype = _coarser(value.dtype, target.dtype)
    a = value.detach().to(target.device, dtype).float()
    b = target.detach().to(dtype).float()
    diff = (a - b).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
    worst = float(diff.max()) if diff.numel() else 0.0
    if not bool((diff <= torch.finfo(dtype).eps * b.abs() + atol).all()):
        raise CheckpointError(f"{source}: {what} tensor {CLIP_PREFIX}{name} differs from this toolkit's by up to "
                              f"{worst:.3g}, more than fine-tuning at the official 1e-7 learning rate moves it "
                              f"(tolerance {atol:g}); the run started from other CLIP weights than network.pretrained")
    return worst


def _compare_finetuned(official: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], atol: float,
                       source: str, what: str) -> dict[str, Any]:
    """Compare every official tensor that ``reference`` also has; ``{"compared", "max_difference", "ignored"}``."""
    worst, compared, ignored = 0.0, 0, []
    for name, value in official.items():
        target = reference.get(name)
        if target is None:
            ignored.append(CLIP_PREFIX + name)
            continue
        worst = max(worst, _drift(name, value, target, atol, source, what))
        compared += 1
    return {"compared": compared, "max_difference": worst, "ignored": ignored}


def _text_reference(backbone: FrozenEncoder, text_tower: FrozenTextTower | None) -> dict[str, torch.Tensor] | None:
    """This toolkit's text tower tensors under open_clip's names (the official ones, without ``clip.``)."""
    if text_tower is not None:
        return dict(text_tower.model.state_dict())
    if backbone.has_text_tower:
        return {k: v for k, v in backbone.model.state_dict().items() if not k.startswith("visual.")}
    return None


# -- the whole checkpoint ---------------------------------------------------------------------------------------
def convert_official_retrieval_checkpoint(state: Mapping[str, Any], backbone: FrozenEncoder, *, source: Any = None,
                                          text_tower: FrozenTextTower | None = None,
                                          finetuned_atol: float = FINETUNED_ATOL) -> dict[str, Any]:
    """An official Side4Video retrieval checkpoint → this toolkit's checkpoint layout, checked against ``backbone``
    (and ``text_tower`` when given: the retrieval model's, frozen or trainable).

    Returns ``{"model": RetrievalModel state dict, "epoch": None, "head": "side4video", "task": "retrieval",
    "official": {...}}`` plus ``"backbone"`` (the identity of ``backbone``) when the checkpoint's frozen image
    tensors were compared with it and matched. ``model`` holds ``side.*``, ``logit_scale``, ``wti.*`` (when the run
    used WTI) and, for a trainable ``text_tower``, ``text.model.*``. Raises a one-line :class:`CheckpointError`
    when the checkpoint belongs to another backbone or layout (see the module docstring)."""
    source = str(source) if source is not None else "checkpoint"
    if not is_official_retrieval_checkpoint(state):
        raise CheckpointError(f"{source} is not an official Side4Video retrieval checkpoint (a state dict with "
                              f"{CLIP_PREFIX}visual.side_* tensors)")
    stripped, prefixed = official_state_dict(state)
    clip_state = {k[len(CLIP_PREFIX):]: v for k, v in stripped.items() if k.startswith(CLIP_PREFIX)}
    top = {k: v for k, v in stripped.items() if not k.startswith(CLIP_PREFIX)}
    info = backbone.info
    if any(k.startswith("visual.side_blocks.") for k in clip_state):
        raise CheckpointError(f"{source} is an official Side4Video retrieval checkpoint for an EVA-CLIP backbone "
                              "(clip.visual.side_blocks.*); only the CLIP (OpenAI ViT) retrieval layout is supported")
    if info.family != "clip":
        raise CheckpointError(f"{source} is an official Side4Video retrieval checkpoint for a CLIP backbone, but "
                              f"network.arch {info.arch} is an {info.family.upper()} backbone")
    if any(k.startswith("side_transformerClip.") for k in top):
        raise CheckpointError(f"{source}: the official run scored with a temporal transformer before WTI "
                              "(side_transformerClip.*, --sim_header seqTransf), which this toolkit does not have")

    side, folded = convert_retrieval_side_state(clip_state, source)
    _check_side_against_backbone(side, info, source)
    ours: dict[str, torch.Tensor] = {f"side.{k}": v for k, v in side.items()}
    wti = _convert_wti(top, info.embed_dim, source)
    ours.update(wti)
    ours["logit_scale"] = _RetrievalReader(clip_state, source).take("logit_scale").reshape(1)

    # the image tower: frozen tensors exactly, ln_post / proj within the fine-tuning drift
    frozen = {k: v for k, v in clip_state.items()
              if k.startswith("visual.") and not _SIDE_KEY.match(k) and k not in FINETUNED_VISUAL}
    report = compare_backbone(frozen, backbone, source)
    visual_tuned = {k: clip_state[k] for k in FINETUNED_VISUAL if k in clip_state}
    finetuned = {"visual": _compare_finetuned(visual_tuned, backbone.model.state_dict(), finetuned_atol, source,
                                              "image-tower")}
    # the text tower: compared when one is at hand; a trainable one takes the checkpoint's fine-tuned weights
    text_official = {k: v for k, v in clip_state.items() if not k.startswith("visual.") and k != "logit_scale"}
    reference = _text_reference(backbone, text_tower)
    if reference is None:
        finetuned["text"] = {"compared": 0, "max_difference": None, "ignored": []}
        text_use = "not compared (no text tower given); the toolkit's own text tower is used"
    else:
        finetuned["text"] = _compare_finetuned(text_official, reference, finetuned_atol, source, "text-tower")
        text_use = "the toolkit's frozen text tower is used"
    if text_tower is not None and text_tower.trainable:
        read = _RetrievalReader(clip_state, source)
        for name in text_tower.model.state_dict():
            ours[TEXT_TOWER_PREFIX + name] = read.take(name)
        text_use = "the checkpoint's fine-tuned text tower is loaded into the trainable one"

    known = set(WTI_NETWORKS) | {"side_transformerClip"}
    others = [k for k in top if k.split(".")[0] not in known]
    details = {
        "source": source, "task": "retrieval", "family": "clip", "epoch": None,
        "side_dim": int(side["pos_embed"].shape[1]), "num_blocks": info.num_layers,
        "num_heads": int(side["pos_embed"].shape[1]) // 64, "embed_dim": info.embed_dim,
        "sim_header": "wti" if wti else "meanP", "logit_scale": float(ours["logit_scale"][0]),
        "module_prefix": prefixed, "stem_bias_folded": folded,
        "backbone_tensors_compared": report["compared"],
        "backbone_tolerance": f"|a - b| <= eps(coarser dtype)·|b| + {BACKBONE_ATOL:g}",
        "finetuned": finetuned, "finetuned_tolerance": f"|a - b| <= eps(coarser dtype)·|b| + {finetuned_atol:g}",
        "text_tower": text_use,
        "ignored": report["ignored"] + finetuned["visual"]["ignored"] + finetuned["text"]["ignored"] + others,
    }
    converted: dict[str, Any] = {"model": ours, "epoch": None, "head": "side4video", "task": "retrieval",
                                 "official": details}
    if report["compared"]:
        converted["backbone"] = backbone_identity(backbone)
    _log_conversion(details, info.arch, len(stripped))
    return converted


def _log_conversion(details: dict[str, Any], arch: str, total: int) -> None:
    visual, text = details["finetuned"]["visual"], details["finetuned"]["text"]
    ignored = details["ignored"]
    listing = ", ".join(ignored[:_SHOWN]) + (f" and {len(ignored) - _SHOWN} more" if len(ignored) > _SHOWN else "")
    text_part = (f"text tower ({text['compared']} tensors) within {text['max_difference']:.3g}, "
                 if text["compared"] else "text tower ")
    log.info(f"{details['source']}: official Side4Video retrieval checkpoint (CLIP, side width {details['side_dim']}, "
             f"{details['num_blocks']} side blocks, {details['sim_header']}) converted"
             + ("; stem conv bias folded into the stem BatchNorm's running mean" if details["stem_bias_folded"] else "")
             + f"; {details['backbone_tensors_compared']} frozen image tensors match {arch}"
             + f"; fine-tuned at 1e-7: ln_post/proj within {visual['max_difference']:.3g}, {text_part}"
             + details["text_tower"]
             + (f"; {len(ignored)} of its {total} tensors ignored: {listing}" if ignored else ""))
    if not details["backbone_tensors_compared"]:
        log.warning(f"{details['source']}: none of the official checkpoint's image-tower tensors could be compared "
                    f"with the frozen backbone {arch}; its side network is used as it is")
