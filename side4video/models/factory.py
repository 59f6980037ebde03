"""``create_model``: the trainable part for a frozen backbone, and ``Recognizer``: the two joined for inference."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones.frozen import BackboneInfo, FrozenEncoder
from ..errors import ConfigError
from .assembly import create_assembler, run_model
from .baselines import FrameAverageProbe, TemporalTransformerHead
from .side_network import SideNetwork

# name → model class; every class takes (backbone_info, num_classes, **options) and reads SideInputs.
HEADS: dict[str, type[nn.Module]] = {
    "side4video": SideNetwork,                    # the Side4Video side network
    "frame_avg": FrameAverageProbe,               # TSN-style linear probe on frozen frame embeddings
    "temporal_transformer": TemporalTransformerHead,  # Text4Vis "Transf" over frozen frame embeddings
}


def create_model(head: str, backbone: BackboneInfo, num_classes: int, **options: Any) -> nn.Module:
    """Build the trainable model that sits on a frozen backbone.

    Args:
        head: a name of :data:`HEADS` (``side4video``, ``frame_avg``, ``temporal_transformer``).
        backbone: the frozen encoder's :class:`BackboneInfo` (``encoder.info``, or ``describe_backbone(arch)``).
        options: keyword arguments of the chosen class (e.g. ``side_dim=320, temporal_module='tsm'``).
    """
    if head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    return HEADS[head](backbone, num_classes, **options)


def model_options_from_config(cfg) -> dict[str, Any]:
    """The ``create_model`` keyword arguments that a config's ``network`` section asks for."""
    net = cfg.network
    if net.head == "side4video":
        return dict(side_dim=net.side_dim, layers=net.side_layers, norm=net.side_norm, tap_norm=net.tap_norm,
                    head_norm=net.head_norm, fusion_weight=net.fusion_weight, temporal_module=net.temporal_module,
                    side_modules=[dict(m) for m in net.side_modules], mlp_ratio=net.mlp_ratio, drop_fc=net.drop_fc,
                    drop_path=net.drop_path, grad_checkpointing=net.grad_checkpointing, recompute=net.recompute,
                    sync_bn=net.sync_bn)
    if net.head == "temporal_transformer":
        return dict(num_frames=clip_frames(cfg), layers=net.transformer_layers, drop_fc=net.drop_fc,
                    sync_bn=net.sync_bn)
    return dict(drop_fc=net.drop_fc, sync_bn=net.sync_bn)


def clip_frames(cfg) -> int:
    """Frames (or pseudo-frames) per clip that the model sees."""
    assembler = cfg.network.assembler
    if assembler and assembler.get("type") == "cluster":
        return int(assembler.get("clusters", 8))
    return int(cfg.data.num_segments) * int(cfg.data.seg_length)


def create_model_from_config(cfg, backbone: BackboneInfo) -> nn.Module:
    return create_model(cfg.network.head, backbone, cfg.data.num_classes, **model_options_from_config(cfg))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class Recognizer:
    """Frozen backbone + trainable model: frames ``[B, T, 3, H, W]`` (normalised) → logits ``[B, C]``.

    Deliberately not an ``nn.Module``: the backbone must never end up in an optimizer or a checkpoint,
    so only :attr:`model` is ever handed to training code.
    """

    def __init__(self, backbone: FrozenEncoder, model: nn.Module, assembler=None):
        self.backbone = backbone
        self.model = model
        self.assembler = assembler or create_assembler(None)

    def __call__(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return run_model(self.backbone, self.model, frames, self.assembler, mask=mask)

    def to(self, device: torch.device | str) -> "Recognizer":
        self.backbone.to(device)
        self.model.to(device)
        return self

    def eval(self) -> "Recognizer":
        self.model.eval()
        return self
