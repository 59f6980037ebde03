"""``create_model``: the trainable part for a frozen backbone, and ``Recognizer``: the two joined for inference."""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ..backbones.frozen import BackboneInfo, FrozenEncoder
from ..registry import Registry
from .assembly import create_assembler, run_model
from .baselines import FrameAverageProbe, TemporalTransformerHead
from .side_network import SideNetwork

# name → model class; every class takes (backbone_info, num_classes, **options) and reads SideInputs. A head of a
# user's own is named ``network.head: package.module:Class`` and receives the options below that it declares.
HEADS: Registry[nn.Module] = Registry("head", base=nn.Module)
HEADS.register("side4video", SideNetwork)                     # the Side4Video side network
HEADS.register("frame_avg", FrameAverageProbe)                # TSN-style linear probe on frozen frame embeddings
HEADS.register("temporal_transformer", TemporalTransformerHead)   # Text4Vis "Transf" over frozen frame embeddings


def create_model(head: str, backbone: BackboneInfo, num_classes: int, **options: Any) -> nn.Module:
    """Build the trainable model that sits on a frozen backbone.

    Args:
        head: a name of :data:`HEADS` (``side4video``, ``frame_avg``, ``temporal_transformer``) or
            ``package.module:Class``.
        backbone: the frozen encoder's :class:`BackboneInfo` (``encoder.info``, or ``describe_backbone(arch)``).
        options: keyword arguments of the chosen class (e.g. ``side_dim=320, temporal_module='tsm'``).
    """
    return HEADS.build({"type": head, **options}, backbone, num_classes)


def model_options_from_config(cfg) -> dict[str, Any]:
    """The ``create_model`` keyword arguments that a config's ``network`` section asks for (a head of a user's own
    gets those of them that its constructor declares, plus ``network.head_args``)."""
    net = cfg.network
    side = dict(side_dim=net.side_dim, layers=net.side_layers, norm=net.side_norm, tap_norm=net.tap_norm,
                head_norm=net.head_norm, fusion_weight=net.fusion_weight, temporal_module=net.temporal_module,
                side_modules=[dict(m) for m in net.side_modules], mlp_ratio=net.mlp_ratio, drop_fc=net.drop_fc,
                drop_path=net.drop_path, grad_checkpointing=net.grad_checkpointing, recompute=net.recompute,
                sync_bn=net.sync_bn, causal=net.causal)
    if net.head == "side4video":
        options = side
    elif net.head == "temporal_transformer":
        options = dict(num_frames=clip_frames(cfg), layers=net.transformer_layers, drop_fc=net.drop_fc,
                       sync_bn=net.sync_bn)
    elif net.head in HEADS:
        options = dict(drop_fc=net.drop_fc, sync_bn=net.sync_bn)
    else:
        accepted = inspect.signature(HEADS.get(net.head)).parameters
        offered = dict(side, num_frames=clip_frames(cfg))
        options = {k: v for k, v in offered.items() if k in accepted}
    return {**options, **dict(net.head_args)}


def clip_frames(cfg) -> int:
    """Frames (or pseudo-frames) per clip that the model sees."""
    assembler = create_assembler(cfg.network.assembler)
    pseudo_frames = getattr(assembler, "num_frames", None)   # e.g. clustering: K pseudo-frames per clip
    if pseudo_frames:
        return int(pseudo_frames)
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
