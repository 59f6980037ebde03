"""``create_model``: the trainable part for a frozen backbone, and ``Recognizer``: the two joined for inference."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..backbones.frozen import BackboneInfo, FrozenEncoder
from .baselines import FrameAverageProbe, TemporalTransformerHead
from .side_network import SideNetwork

HEADS = ("side4video", "frame_avg", "temporal_transformer")


def create_model(head: str, backbone: BackboneInfo, num_classes: int, *, num_frames: int = 8,
                 **options: Any) -> nn.Module:
    """Build the trainable model that sits on a frozen backbone.

    Args:
        head: ``side4video`` (the side network), ``frame_avg`` (frame-averaging linear probe) or
            ``temporal_transformer`` (Text4Vis-style transformer over frozen frame embeddings).
        backbone: the frozen encoder's :class:`BackboneInfo` (``encoder.info``, or ``describe_backbone(arch)``).
        options: keyword arguments of the chosen class (e.g. ``side_dim=320, temporal_module='tsm'``).
    """
    if head == "side4video":
        return SideNetwork(backbone, num_classes, **options)
    if head == "frame_avg":
        return FrameAverageProbe(backbone, num_classes, **options)
    if head == "temporal_transformer":
        return TemporalTransformerHead(backbone, num_classes, num_frames=num_frames, **options)
    raise ValueError(f"unknown head {head!r}; choose one of {HEADS}")


def model_options_from_config(cfg) -> dict[str, Any]:
    """The ``create_model`` keyword arguments that a config's ``network`` section asks for."""
    net = cfg.network
    if net.head == "side4video":
        return dict(side_dim=net.side_dim, layers=net.side_layers, norm=net.side_norm,
                    fusion_weight=net.fusion_weight, temporal_module=net.temporal_module, mlp_ratio=net.mlp_ratio,
                    drop_fc=net.drop_fc, drop_path=net.drop_path, grad_checkpointing=net.grad_checkpointing,
                    sync_bn=net.sync_bn)
    if net.head == "temporal_transformer":
        return dict(layers=net.transformer_layers, drop_fc=net.drop_fc, sync_bn=net.sync_bn)
    return dict(drop_fc=net.drop_fc, sync_bn=net.sync_bn)


def create_model_from_config(cfg, backbone: BackboneInfo) -> nn.Module:
    return create_model(cfg.network.head, backbone, cfg.data.num_classes,
                        num_frames=cfg.data.num_segments * cfg.data.seg_length, **model_options_from_config(cfg))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


class Recognizer:
    """Frozen backbone + trainable model: frames ``[B, T, 3, H, W]`` (normalised) → logits ``[B, C]``.

    Deliberately not an ``nn.Module``: the backbone must never end up in an optimizer or a checkpoint,
    so only :attr:`model` is ever handed to training code.
    """

    def __init__(self, backbone: FrozenEncoder, model: nn.Module):
        self.backbone = backbone
        self.model = model

    def taps(self, frames: torch.Tensor):
        return self.backbone.tap(frames, layers=self.model.backbone_layers, embedding=self.model.needs_embedding)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        taps = self.taps(frames)
        return self.model(frames, taps.tokens, taps.embedding)

    def to(self, device: torch.device | str) -> "Recognizer":
        self.backbone.to(device)
        self.model.to(device)
        return self

    def eval(self) -> "Recognizer":
        self.model.eval()
        return self
