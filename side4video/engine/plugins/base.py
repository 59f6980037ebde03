"""What every training plugin builds on: the batch it sees, the context it is set up with, the base class with
its hooks, and the loss and validated-model rules the trainer and the plugins share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TrainBatch:
    """One training step's data as the plugins see it (every field may be replaced by a plugin)."""
    frames: torch.Tensor                  # normalised [B, T, 3, H, W] (float32)
    labels: torch.Tensor                  # int64 [B]
    targets: torch.Tensor                 # int64 [B] or soft [B, C]
    mask: torch.Tensor | None = None      # [B, F] valid frames (full-video clips), else None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginContext:
    """What a plugin may use when it is set up."""
    cfg: Any
    model: nn.Module                      # the trainable model (side network / head), on its device
    backbone: Any                         # the FrozenEncoder (never to be trained)
    assembler: Any                        # the clip assembler (frames → SideInputs)
    num_classes: int
    device: torch.device


class TrainPlugin:
    """Base class: every hook is optional. ``name`` is the registry name; ``lr_mult`` scales the base lr for the
    plugin's trainable parts (their own optimizer group)."""

    name = "plugin"
    lr_mult: float = 1.0
    weight_decay: float | None = None     # None: solver.weight_decay

    def setup(self, ctx: PluginContext) -> nn.Module | None:
        """Build state; return trainable parts (or None). Called once, before the optimizer is built."""
        return None

    def on_batch(self, batch: TrainBatch) -> TrainBatch:
        """Before the backbone: mix pixels, change targets."""
        return batch

    def on_inputs(self, inputs, batch: TrainBatch):
        """After the backbone: change the model's SideInputs."""
        return inputs

    def loss(self, logits: torch.Tensor, inputs, batch: TrainBatch, model: nn.Module) -> dict[str, torch.Tensor]:
        """Extra loss terms (already weighted), added to the classification loss."""
        return {}

    def after_step(self, step: int, model: nn.Module) -> None:
        """After each optimizer step (``step`` counts optimizer steps from 1)."""

    def eval_model(self, model: nn.Module) -> nn.Module | None:
        """The model to validate instead of ``model`` (None: ``model`` itself)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class TrainableParts(nn.Module):
    """What the optimizer trains: the model plus the plugins' trainable parts. ``own_groups`` (``parts.<name>`` →
    weight decay, None: the solver's) tells ``build_optimizer`` that each part gets optimizer groups of its own."""

    def __init__(self, model: nn.Module, parts: dict[str, nn.Module],
                 weight_decay: dict[str, float | None] | None = None):
        super().__init__()
        self.model = model
        self.parts = nn.ModuleDict(parts)
        self.own_groups = {f"parts.{name}": (weight_decay or {}).get(name) for name in parts}

    def forward(self, inputs):
        return self.model(inputs)


def set_up_plugins(plugins: list[TrainPlugin], ctx: PluginContext,
                   lr_mult: Mapping[str, float] | None = None) -> tuple[TrainableParts, dict[str, float]]:
    """Set every plugin up on ``ctx``; returns the model with the plugins' trainable parts (on ``ctx.device``) and
    ``lr_mult`` extended by one ``parts.<plugin>`` entry per part (the trainer, the ablation runner and the
    benchmark build their optimizers from these two)."""
    parts: dict[str, nn.Module] = {}
    for plugin in plugins:
        part = plugin.setup(ctx)
        if part is not None:
            parts[plugin.name] = part.to(ctx.device)
    multipliers = dict(lr_mult or {})
    multipliers.update({f"parts.{plugin.name}": plugin.lr_mult for plugin in plugins if plugin.name in parts})
    decays = {plugin.name: plugin.weight_decay for plugin in plugins if plugin.name in parts}
    validation_model(ctx.model, plugins)          # two validated models are refused now, not after an epoch
    return TrainableParts(ctx.model, parts, decays), multipliers


def validation_model(model: nn.Module, plugins: list[TrainPlugin]) -> nn.Module:
    """The model validated: the one plugin's that provides one (e.g. the EMA copy), else ``model`` itself. Two
    providers are refused: checkpoints keep the validated weights once, as ``eval_model``, so which one it is must
    be unambiguous."""
    providers = [(plugin.name, candidate) for plugin in plugins
                 if (candidate := plugin.eval_model(model)) is not None]
    if len(providers) > 1:
        from ...errors import ConfigError
        raise ConfigError(f"solver.plugins: {' and '.join(name for name, _ in providers)} each provide the model to "
                          "validate; keep one (e.g. ema with validate: false)")
    return providers[0][1] if providers else model


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against hard labels (with label smoothing) or soft targets (mixup: smoothing is in them)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=0.0 if targets.dim() == 2 else smoothing)


__all__ = ["TrainBatch", "PluginContext", "TrainPlugin", "TrainableParts", "set_up_plugins", "classification_loss", "validation_model"]
