"""Config → parts. Shared by training, testing, prediction and feature extraction so they build the same thing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backbones import FrozenEncoder, backbone_identity, create_backbone
from ..models import create_model_from_config
from .checkpoint import check_backbone_identity, load_checkpoint, trainable_state_dict


def backbone_from_config(cfg, device: torch.device | str = "cpu", keep_text_tower: bool = False) -> FrozenEncoder:
    """``network.arch`` + ``network.pretrained`` (path | None: clip_pretrain/ | false: random) → frozen encoder."""
    net = cfg.network
    pretrained = net.pretrained
    if isinstance(pretrained, str) and pretrained.lower() in ("false", "none", "random"):
        pretrained = False if pretrained.lower() != "none" else None
    return create_backbone(net.arch, pretrained=pretrained, precision=net.backbone_precision,
                           quick_gelu=net.quick_gelu, pretrained_dir=net.pretrained_dir,
                           keep_text_tower=keep_text_tower, device=device)


def model_from_config(cfg, backbone: FrozenEncoder, seed: int | None = None) -> nn.Module:
    """The trainable part, initialised identically on every process (seeded)."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_model_from_config(cfg, backbone.info)


def load_trainable_weights(model: nn.Module, path: str | Path, backbone: FrozenEncoder) -> dict[str, Any]:
    """Load trainable weights from a checkpoint (checking it belongs to this backbone). Returns the checkpoint."""
    checkpoint = load_checkpoint(path)
    check_backbone_identity(checkpoint, backbone_identity(backbone), path)
    state = trainable_state_dict(checkpoint)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
        trained_head = config.get("network", {}).get("head", "?")
        raise ValueError(f"{path} (trained with network.head={trained_head}) does not fit this model: "
                         f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                         f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}")
    return checkpoint
