"""``create_backbone``: one factory for every frozen image encoder."""
from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator

import timm
import torch
from open_clip.model import CLIP, CustomTextCLIP
from torch import nn

from ..errors import ConfigError, InputNotFoundError
from .frozen import BackboneInfo, FrozenEncoder, drop_text_tower
from .names import ArchSpec, resolve_arch
from .weights import (
    WeightFile,
    default_pretrained_dir,
    file_sha256,
    find_conventional_file,
    load_exact,
    read_weight_file,
)

log = logging.getLogger(__name__)

WHERE_TO_GET = ("See clip_pretrain/README.md for where each file comes from "
                "(OpenAI archives, BAAI EVA-CLIP checkpoints, open_clip hub files).")


def create_backbone(arch: str | Path, pretrained: str | Path | bool | None = None, *,
                    precision: str = "fp32", quick_gelu: bool | None = None,
                    pretrained_dir: str | Path | None = None, keep_text_tower: bool = False,
                    device: str | torch.device | None = None) -> FrozenEncoder:
    """Build a frozen CLIP/EVA image encoder from a local weight file.

    Args:
        arch: ``ViT-B/16`` / ``ViT-B-16`` (OpenAI spellings), BAAI names like ``EVA02-CLIP-L-14``, any open_clip
            ViT config name (``EVA02-B-16``), or a path to an open_clip-style JSON model config.
        pretrained: a weight file; ``None``/``True``: the conventional file in ``pretrained_dir``
            (default ``clip_pretrain/``), which must exist; ``False``: random weights (tests, demo), with a warning.
        precision: ``fp32`` | ``bf16`` | ``fp16`` for the frozen encoder only.
        quick_gelu: force QuickGELU on/off; by default on for OpenAI weights (TorchScript archives or
            state dicts that carry OpenAI's extra keys, or files named as OpenAI distributes them).
        keep_text_tower: keep the text encoder (zero-shot classification); dropped otherwise to save memory.
    """
    spec = resolve_arch(arch)
    weight_file = _resolve_weights(spec, pretrained, pretrained_dir)
    use_quick_gelu = _decide_quick_gelu(spec, weight_file, quick_gelu)
    model = create_open_clip_model(spec.model_cfg, quick_gelu=use_quick_gelu)
    if weight_file is not None:
        state = weight_file.state_dict
        if not keep_text_tower:
            # Only the image tower is needed (and checked), so image-only weight files load as well.
            drop_text_tower(model)
            state = {k: v for k, v in state.items() if k.startswith("visual.") or k in model.state_dict()}
        load_exact(model, state, weight_file.path)
        weight_file.state_dict = {}  # release the loaded copy
    info = _describe(spec, model, weight_file, use_quick_gelu)
    encoder = FrozenEncoder(model, info, precision=precision, keep_text_tower=keep_text_tower)
    if device is not None:
        encoder.to(device)
    return encoder


def describe_backbone(arch: str | Path) -> BackboneInfo:
    """Shapes of a backbone (width, layers, patch, image size) without weights or memory (meta device)."""
    spec = resolve_arch(arch)
    with torch.device("meta"):
        model = create_open_clip_model(spec.model_cfg)
    return _describe(spec, model, None, False)


def backbone_identity(encoder: FrozenEncoder) -> dict[str, Any]:
    """What training checkpoints record instead of the backbone's tensors."""
    info = encoder.info
    identity = {"arch": info.arch, "weights": info.weights, "quick_gelu": info.quick_gelu,
                "sha256": file_sha256(info.weights) if info.weights else None}
    return identity


def _resolve_weights(spec: ArchSpec, pretrained, pretrained_dir) -> WeightFile | None:
    if pretrained is False:
        warnings.warn(f"backbone {spec.name}: RANDOM weights (pretrained=False). Only for tests and demos.",
                      stacklevel=3)
        return None
    if pretrained is None or pretrained is True:
        search = [Path(pretrained_dir) if pretrained_dir else default_pretrained_dir()]
        if spec.config_path is not None:
            search.insert(0, spec.config_path.parent)
        for folder in search:
            found = find_conventional_file(spec.weight_files, folder)
            if found is not None:
                return read_weight_file(found)
        looked = [str(folder / spec.weight_files[0]) for folder in search]
        others = ", ".join(spec.weight_files[1:4])
        raise InputNotFoundError(
            f"no weights for backbone '{spec.name}': looked for {' and '.join(looked)}"
            + (f" (also accepted: {others})" if others else "")
            + f". Put the file there or pass pretrained=PATH (network.pretrained in a config). {WHERE_TO_GET}")
    return read_weight_file(pretrained)


def _decide_quick_gelu(spec: ArchSpec, weight_file: WeightFile | None, forced: bool | None) -> bool:
    if forced is not None:
        return bool(forced)
    if spec.model_cfg.get("quick_gelu"):
        return True
    if weight_file is None:
        return False
    if spec.is_timm:
        return False  # timm towers have their own activation
    name = weight_file.path.name
    openai_file = weight_file.openai or "openai" in name.lower() or (spec.openai and name == spec.weight_files[0])
    if openai_file:
        log.info("%s: OpenAI weights detected in %s → QuickGELU", spec.name, weight_file.path)
    return openai_file


@contextlib.contextmanager
def _extra_timm_kwargs(extra: dict[str, Any]) -> Iterator[None]:
    """Pass extra constructor arguments (e.g. a tiny depth/width) to the timm trunk open_clip builds."""
    if not extra:
        yield
        return
    original = timm.create_model

    def create_model(name: str, **kwargs: Any):
        return original(name, **{**kwargs, **extra})

    timm.create_model = create_model
    try:
        yield
    finally:
        timm.create_model = original


def create_open_clip_model(model_cfg: dict[str, Any], quick_gelu: bool = False) -> nn.Module:
    """Instantiate an open_clip CLIP / CustomTextCLIP from a config dict (random weights).

    Besides open_clip's own fields, ``vision_cfg.timm_model_kwargs`` passes constructor arguments to a timm
    trunk (how tests and the demo make tiny EVA towers).
    """
    cfg = copy.deepcopy(model_cfg)
    custom_text = cfg.pop("custom_text", False)
    cfg.pop("quick_gelu", None)
    vision_cfg = cfg.get("vision_cfg", {})
    timm_kwargs = vision_cfg.pop("timm_model_kwargs", {}) or {}
    if "multimodal_cfg" in cfg or "hf_model_name" in cfg.get("text_cfg", {}):
        raise ConfigError("CoCa and Hugging Face text towers are not supported as frozen backbones")
    model_class = CustomTextCLIP if custom_text else CLIP
    with _extra_timm_kwargs(timm_kwargs):
        return model_class(**cfg, quick_gelu=quick_gelu)


def _describe(spec: ArchSpec, model: nn.Module, weight_file: WeightFile | None, quick_gelu: bool) -> BackboneInfo:
    visual = model.visual
    if hasattr(visual, "trunk"):
        trunk = visual.trunk
        if getattr(trunk, "rope_mixed", False):
            raise ConfigError(f"{spec.name}: timm trunks with depth-mixed RoPE are not supported")
        patch = trunk.patch_embed.patch_size
        img = trunk.patch_embed.img_size
        family, width, layers = "eva", trunk.embed_dim, len(trunk.blocks)
        if getattr(trunk, "num_prefix_tokens", 1) != 1:
            raise ConfigError(f"{spec.name}: the side network needs exactly one class token")
    elif hasattr(visual, "transformer"):
        patch, img = visual.patch_size, visual.image_size
        family, width, layers = "clip", visual.transformer.width, len(visual.transformer.resblocks)
    else:
        raise ConfigError(f"{spec.name}: only ViT image towers are supported (got {type(visual).__name__})")
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    img = img[0] if isinstance(img, (tuple, list)) else img
    embed_dim = model.visual.output_dim if hasattr(model.visual, "output_dim") else spec.model_cfg["embed_dim"]
    return BackboneInfo(arch=spec.name, family=family, width=int(width), num_layers=int(layers),
                        patch_size=int(patch), image_size=int(img), embed_dim=int(embed_dim),
                        weights=str(weight_file.path) if weight_file else None,
                        weights_format=weight_file.format if weight_file else None, quick_gelu=quick_gelu)
