"""Config → parts. Shared by training, testing, prediction and feature extraction so they build the same thing."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import FrozenEncoder, backbone_identity, create_backbone
from ..config import load_config
from ..errors import CheckpointError, ConfigError
from ..models import create_model_from_config, official
from ..retrieval.official import convert_official_retrieval_checkpoint, is_official_retrieval_checkpoint
from ..tasks import create_task
from .checkpoint import check_backbone_identity, load_checkpoint, trainable_state_dict

PRETRAINED_DIR_ENV = "SIDE4VIDEO_PRETRAINED_DIR"


def pretrained_dir(cfg) -> str:
    """``network.pretrained_dir``, else ``$SIDE4VIDEO_PRETRAINED_DIR``, else ``clip_pretrain``."""
    return cfg.network.pretrained_dir or os.environ.get(PRETRAINED_DIR_ENV) or "clip_pretrain"


def backbone_from_config(cfg, device: torch.device | str = "cpu", keep_text_tower: bool = False) -> FrozenEncoder:
    """``network.arch`` + ``network.pretrained`` (path | None: the pretrained dir | false: random) → frozen encoder,
    checked against ``data.input_size``."""
    net = cfg.network
    try:
        encoder = create_backbone(net.arch, pretrained=net.pretrained, precision=net.backbone_precision,
                                  quick_gelu=net.quick_gelu, pretrained_dir=pretrained_dir(cfg),
                                  keep_text_tower=keep_text_tower, device=device)
    except FileNotFoundError as exc:
        raise type(exc)(_with_toy_hint(str(exc), net.pretrained)) from None
    info = encoder.info
    size = int(cfg.data.input_size)
    if size != info.image_size:
        raise ConfigError(f"data.input_size is {size}, but backbone {info.arch} takes {info.image_size} x "
                          f"{info.image_size} px images (its position embedding has {info.grid_size} x "
                          f"{info.grid_size} patches of {info.patch_size} px); set data.input_size: {info.image_size}")
    return encoder


def _with_toy_hint(message: str, pretrained: Any) -> str:
    if isinstance(pretrained, str) and "toy_data" in pretrained:
        return (f"{message}. The toy configs use a tiny random backbone that the toy-data command writes: "
                f"python -m side4video.data.toy --out toy_data")
    return message


def model_from_config(cfg, backbone: FrozenEncoder, seed: int | None = None) -> nn.Module:
    """The trainable part, initialised identically on every process (seeded)."""
    if seed is not None:
        torch.manual_seed(seed)
    model = create_task(cfg).build_model(cfg, backbone)   # e.g. retrieval: image and text towers, its own head
    return model if model is not None else create_model_from_config(cfg, backbone.info)


def read_trainable_checkpoint(path: str | Path, backbone: FrozenEncoder | None = None,
                              text_tower=None) -> dict[str, Any]:
    """A checkpoint of this toolkit, or one written by the official Side4Video code (recognition or retrieval;
    converted on the fly, its backbone tensors compared with ``backbone`` and, for retrieval, ``text_tower``), as
    ``{"model": state_dict, ...}``."""
    checkpoint = load_checkpoint(path)
    if is_official_retrieval_checkpoint(checkpoint):
        if backbone is None:
            raise CheckpointError(f"{path} is an official Side4Video retrieval checkpoint; it needs the backbone to "
                                  "convert")
        return convert_official_retrieval_checkpoint(checkpoint, backbone, source=path, text_tower=text_tower)
    if official.is_official_checkpoint(checkpoint):
        if backbone is None:
            raise CheckpointError(f"{path} is an official Side4Video checkpoint; it needs the backbone to convert")
        return official.convert_official_checkpoint(checkpoint, backbone, source=path)
    return checkpoint


def load_trainable_weights(model: nn.Module, path: str | Path, backbone: FrozenEncoder,
                           cfg=None, checkpoint: dict[str, Any] | None = None, *, allow_other_weights: bool = False,
                           log: logging.Logger | None = None) -> dict[str, Any]:
    """Load trainable weights from a checkpoint (checking it belongs to this backbone and model). Returns it.

    A checkpoint trained with other backbone weights (same architecture) is refused unless
    ``allow_other_weights``; then the difference is logged and recorded as ``checkpoint["other_backbone"]``."""
    if checkpoint is None:
        checkpoint = read_trainable_checkpoint(path, backbone, getattr(model, "text_tower", None))
    difference = check_backbone_identity(checkpoint, backbone_identity(backbone), path,
                                         allow_other_weights=allow_other_weights)
    if difference:
        (log or logging.getLogger("side4video")).warning(difference)
        checkpoint = dict(checkpoint, other_backbone=difference)
    state = trainable_state_dict(checkpoint, model_keys=set(model.state_dict()))
    check_fits(model, state, checkpoint, path, cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        trained = _saved_config(checkpoint).get("network", {}).get("head", checkpoint.get("head", "?"))
        raise CheckpointError(f"{path} (trained with network.head={trained}) does not fit this model: "
                              f"missing {missing[:6]}{'...' if len(missing) > 6 else ''}, "
                              f"unexpected {unexpected[:6]}{'...' if len(unexpected) > 6 else ''}")
    return checkpoint


def _saved_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    config = checkpoint.get("config")
    return config if isinstance(config, dict) else {}


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], checkpoint: dict[str, Any], path: str | Path,
               cfg=None) -> None:
    """One-line errors naming both values when a checkpoint was trained for another head, class count or width."""
    saved = _saved_config(checkpoint)
    saved_head = checkpoint.get("head") or saved.get("network", {}).get("head")
    if cfg is not None and saved_head and saved_head != cfg.network.head:
        raise CheckpointError(f"{path} holds a '{saved_head}' model, but the config asks for network.head: "
                              f"{cfg.network.head}")
    expected = model.state_dict()
    fc_weight = state.get("fc.weight")
    if fc_weight is not None and "fc.weight" in expected and fc_weight.shape != expected["fc.weight"].shape:
        trained_classes, classes = fc_weight.shape[0], expected["fc.weight"].shape[0]
        if trained_classes != classes:
            raise CheckpointError(f"{path} was trained for {trained_classes} classes, but data.num_classes is "
                                  f"{classes}")
        raise CheckpointError(f"{path} has a classifier of width {fc_weight.shape[1]}, the model "
                              f"{expected['fc.weight'].shape[1]} (network.side_dim)")
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if mismatched:
        raise CheckpointError(f"{path} does not fit the model the config builds ({len(mismatched)} tensors differ in "
                              f"shape, e.g. {mismatched[0]}); check network.side_dim / side_layers / side_modules")


def stored_config(path: str | Path) -> dict[str, Any]:
    """The config a training checkpoint stores (empty for official or plain state-dict checkpoints)."""
    return _saved_config(load_checkpoint(path))


def config_for_checkpoint(path: str | Path, config: str | Path | None, opts) -> Any:
    """The config a tool runs with: ``config`` if given, else the one stored in the checkpoint (``--opts`` on top)."""
    if config is not None:
        return load_config(config, opts)
    checkpoint = load_checkpoint(path)
    saved = _saved_config(checkpoint)
    if not saved:
        raise ConfigError(f"{path} stores no config (it is not a side4video training checkpoint); pass --config")
    return load_config(None, opts, base=saved)


def load_for_inference(weights: str | Path, config: str | Path | None = None, opts=(), *,
                       device: torch.device | str = "cpu", allow_other_backbone: bool = False
                       ) -> tuple[Any, FrozenEncoder, nn.Module]:
    """``(cfg, backbone, model)`` for a checkpoint, ready for inference (eval mode, on ``device``): the config stored
    in the checkpoint unless ``config`` is given (``opts`` on top), the frozen backbone it names, the trained weights.
    What prediction, streaming and export build on."""
    cfg = config_for_checkpoint(weights, config, list(opts or ()))
    backbone = backbone_from_config(cfg, device)
    model = model_from_config(cfg, backbone)
    load_trainable_weights(model, weights, backbone, cfg, allow_other_weights=allow_other_backbone)
    return cfg, backbone.eval(), model.to(device).eval()
