"""Training plugins: extras that hook into the short training loop through a few named calls.

The loop (``engine/trainer.py``) is::

    batch → plugin.on_batch (pixels, targets)   → clip assembly (frozen backbone, no grad) → plugin.on_inputs
          → model → loss + Σ plugin.loss          → DeepSpeed backward/step                  → plugin.after_step

A plugin may declare trainable parts (``setup`` returns a module: it joins the DeepSpeed module with its own lr
group, never the backbone), has state that checkpoints save and resume restores exactly (``state_dict``), and may
provide the model used for validation (``eval_model``, e.g. an EMA copy). Plugins are listed in the config::

    solver:
      plugins: [{type: ema, decay: 0.999}, {type: svmix}]

``solver.mixup`` / ``solver.cutmix`` > 0 add the mixup plugin implicitly. To add a plugin: write a
:class:`TrainPlugin` subclass (in its own file) and add one line to :data:`PLUGINS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..config.types import check_named_entry
from ..errors import ConfigError


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


class MixupPlugin(TrainPlugin):
    """Mixup / CutMix on video clips with timm's ``Mixup`` (soft targets, label smoothing folded in).

    timm's CutMix cuts ``x[:, :, y0:y1, x0:x1]``, i.e. the last two dims of a 4-D image batch. A clip batch
    ``[B, T, 3, H, W]`` is therefore viewed as ``[B, T·3, H, W]``: the same box on every frame and colour channel
    of a clip, and the label weight is the box's true area fraction of H×W.
    """

    name = "mixup"

    def __init__(self, mixup: float = 0.8, cutmix: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5,
                 smoothing: float = 0.0):
        self.options = dict(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob,
                            label_smoothing=smoothing)
        self.mixup = None

    def setup(self, ctx: PluginContext) -> None:
        from timm.data import Mixup
        self.mixup = Mixup(num_classes=ctx.num_classes, **self.options)
        return None

    def on_batch(self, batch: TrainBatch) -> TrainBatch:
        frames = batch.frames
        if frames.shape[0] % 2:
            raise ConfigError(f"mixup/cutmix needs an even number of clips per process, got {frames.shape[0]} "
                              "(data.batch_size × data.num_sample)")
        b, t, c, h, w = frames.shape
        flat = frames.reshape(b, t * c, h, w)
        flat, targets = self.mixup(flat, batch.labels)
        batch.frames, batch.targets = flat.reshape(b, t, c, h, w), targets
        return batch


class EmaPlugin(TrainPlugin):
    """An exponential moving average of the trainable model (timm ``ModelEmaV3``: θ_ema ← d·θ_ema + (1−d)·θ after
    every optimizer step, buffers included), validated instead of the model and saved in the checkpoints."""

    name = "ema"

    def __init__(self, decay: float = 0.999, warmup: bool = False, validate: bool = True):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup, self.validate = decay, warmup, validate
        self.ema = None

    def setup(self, ctx: PluginContext) -> None:
        from timm.utils import ModelEmaV3
        self.ema = ModelEmaV3(ctx.model, decay=self.decay, use_warmup=self.warmup, stochastic_rounding=False)
        self.ema.requires_grad_(False)
        return None

    @property
    def module(self) -> nn.Module:
        return self.ema.module

    def after_step(self, step: int, model: nn.Module) -> None:
        # a constant decay from the initial weights on (timm's step-aware decay would copy the model at step 1)
        self.ema.update(model, step=step if self.warmup else None)

    def eval_model(self, model: nn.Module) -> nn.Module | None:
        return self.ema.module if self.validate else None

    def state_dict(self) -> dict[str, Any]:
        return {"module": {k: v.detach().to("cpu", copy=True) for k, v in self.ema.module.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.ema.module.load_state_dict(state["module"])


# name → plugin class (one line per plugin)
PLUGINS: dict[str, type[TrainPlugin]] = {
    "mixup": MixupPlugin,
    "ema": EmaPlugin,
}


def _registry() -> dict[str, type[TrainPlugin]]:
    try:  # SV-Mix lives in its own file
        from .svmix import SVMixPlugin
        PLUGINS.setdefault("svmix", SVMixPlugin)
    except ImportError:  # pragma: no cover - while it is absent
        pass
    return PLUGINS


def check_plugin_spec(entry: dict) -> dict:
    """``{type: NAME, ...}`` → checked (closest-name hints for the type and its arguments)."""
    return {"type": entry.get("type"), **check_named_entry("training plugin", _registry(), entry)}


def build_plugins(cfg) -> list[TrainPlugin]:
    """The config's plugins, the implicit mixup plugin first when ``solver.mixup``/``solver.cutmix`` > 0."""
    solver = cfg.solver
    specs = [dict(entry) for entry in solver.plugins]
    if (solver.mixup > 0 or solver.cutmix > 0) and not any(s["type"] == "mixup" for s in specs):
        specs.insert(0, {"type": "mixup", "mixup": solver.mixup, "cutmix": solver.cutmix, "prob": solver.mix_prob,
                         "switch_prob": solver.mix_switch_prob, "smoothing": solver.smoothing})
    table = _registry()
    plugins = []
    for spec in specs:
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        try:
            plugins.append(table[spec["type"]](**kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"solver.plugins: cannot build '{spec['type']}' with {kwargs}: {exc}") from None
    names = [p.name for p in plugins]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ConfigError(f"solver.plugins lists {sorted(duplicated)} more than once")
    return plugins


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against hard labels (with label smoothing) or soft targets (mixup: smoothing is in them)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=0.0 if targets.dim() == 2 else smoothing)


__all__ = ["TrainBatch", "PluginContext", "TrainPlugin", "MixupPlugin", "EmaPlugin", "PLUGINS", "check_plugin_spec",
           "build_plugins", "classification_loss"]
