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
:class:`TrainPlugin` subclass (in its own file) and add one line to :data:`PLUGINS` below.
"""
from __future__ import annotations

from ...config.types import check_named_entry
from ...errors import ConfigError
from .base import (PluginContext, TrainableParts, TrainBatch, TrainPlugin, classification_loss, set_up_plugins,
                   validation_model)
from .ema import EmaPlugin
from .mixup import MixupPlugin
from .svmix import SVMixPlugin

# name → plugin class (one line per plugin)
PLUGINS: dict[str, type[TrainPlugin]] = {
    "mixup": MixupPlugin,
    "ema": EmaPlugin,
    "svmix": SVMixPlugin,
}


def check_plugin_spec(entry: dict) -> dict:
    """``{type: NAME, ...}`` → checked (closest-name hints for the type and its arguments)."""
    return {"type": entry.get("type"), **check_named_entry("training plugin", PLUGINS, entry)}


def build_plugins(cfg) -> list[TrainPlugin]:
    """The config's plugins, the implicit mixup plugin first when ``solver.mixup``/``solver.cutmix`` > 0."""
    solver = cfg.solver
    specs = [dict(entry) for entry in solver.plugins]
    if (solver.mixup > 0 or solver.cutmix > 0) and not any(s["type"] == "mixup" for s in specs):
        specs.insert(0, {"type": "mixup", "mixup": solver.mixup, "cutmix": solver.cutmix, "prob": solver.mix_prob,
                         "switch_prob": solver.mix_switch_prob, "smoothing": solver.smoothing})
    plugins = []
    for spec in specs:
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        try:
            plugins.append(PLUGINS[spec["type"]](**kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"solver.plugins: cannot build '{spec['type']}' with {kwargs}: {exc}") from None
    names = [p.name for p in plugins]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ConfigError(f"solver.plugins lists {sorted(duplicated)} more than once")
    return plugins


__all__ = ["TrainBatch", "PluginContext", "TrainPlugin", "TrainableParts", "set_up_plugins", "MixupPlugin", "EmaPlugin",
           "SVMixPlugin", "PLUGINS", "check_plugin_spec", "build_plugins", "classification_loss", "validation_model"]
