"""What every training plugin builds on: the context it is set up with, the base class with its hooks, the
registry, and the validated-model rule the trainer and the plugins share."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..tasks import Task, TrainBatch


@dataclass
class PluginContext:
    """What a plugin may use when it is set up."""
    cfg: Any
    model: nn.Module                      # the trainable model (side network / head), on its device
    backbone: Any                         # the FrozenEncoder (never to be trained)
    assembler: Any                        # the clip assembler (frames → SideInputs)
    num_classes: int
    device: torch.device
    task: Task | None = None              # the run's task (its loss, its targets)


class TrainPlugin:
    """Base class: every hook is optional. ``name`` is the registry name (it keys the plugin's checkpoint state);
    ``lr_mult`` scales the base lr for the plugin's trainable parts (their own optimizer group)."""

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
        """Extra loss terms (already weighted), added to the task's loss."""
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
    weight decay, None: the solver's) tells ``create_optimizer`` that each part gets optimizer groups of its own."""

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
        raise ConfigError(f"solver.plugins: {' and '.join(name for name, _ in providers)} each provide the model to "
                          "validate; keep one (e.g. ema with validate: false)")
    return providers[0][1] if providers else model


PLUGINS: Registry[TrainPlugin] = Registry("training plugin", base=TrainPlugin, name_attribute="name")

__all__ = ["PLUGINS", "PluginContext", "TrainPlugin", "TrainableParts", "set_up_plugins", "validation_model"]
