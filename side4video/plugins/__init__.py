"""Training plugins: extras that hook into the one training step (``engine/step.py``) through a few named calls.

The step is::

    batch → plugin.on_batch (pixels, targets)   → clip assembly (frozen backbone, no grad) → plugin.on_inputs
          → model → task loss + Σ plugin.loss   → optimizer backend backward/step          → plugin.after_step

A plugin may declare trainable parts (``setup`` returns a module: it joins the trained module with its own lr
group, never the backbone), has state that checkpoints save and resume restores exactly (``state_dict``), and may
provide the model used for validation (``eval_model``, e.g. an EMA copy). Plugins are listed in the config::

    solver:
      plugins: [{type: ema, decay: 0.999}, {type: svmix}, {type: my_package.my_module:MyPlugin}]

``solver.mixup`` / ``solver.cutmix`` > 0 add the mixup plugin implicitly. To add a plugin: write
``plugins/<name>.py`` with a :class:`TrainPlugin` subclass decorated ``@PLUGINS.register("<name>")`` (its ``name``
attribute equal to that name) and import it below (one line), or name it as ``package.module:Class`` in a config.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import ema, mixup, svmix  # noqa: F401  (each registers itself)
from .base import PLUGINS, PluginContext, TrainableParts, TrainPlugin, set_up_plugins, validation_model
from .ema import EmaPlugin
from .mixup import MixupPlugin
from .svmix import SVMixPlugin


def check_plugin_spec(entry: dict) -> dict:
    """``{type: NAME, ...}`` → checked (closest-name hints for the type and its arguments, argument types)."""
    return {"type": entry.get("type"), **PLUGINS.check(entry)}


def plugin_specs(solver) -> list[dict[str, Any]]:
    """The plugins a solver section asks for, the implicit mixup plugin first when ``solver.mixup``/``cutmix`` > 0
    (an explicit mixup entry next to them is ambiguous: refused)."""
    specs = [dict(entry) for entry in solver.plugins]
    implicit = solver.mixup > 0 or solver.cutmix > 0
    if implicit and any(spec["type"] == "mixup" for spec in specs):
        raise ConfigError(f"solver.mixup ({solver.mixup}) / solver.cutmix ({solver.cutmix}) and a 'mixup' entry in "
                          "solver.plugins both configure mixup; keep one (set mixup and cutmix to 0, or remove the "
                          "entry)")
    if implicit:
        specs.insert(0, {"type": "mixup", "mixup": solver.mixup, "cutmix": solver.cutmix, "prob": solver.mix_prob,
                         "switch_prob": solver.mix_switch_prob})
    return specs


def create_plugins(cfg) -> list[TrainPlugin]:
    """The config's training plugins, in order."""
    plugins = [PLUGINS.build(spec) for spec in plugin_specs(cfg.solver)]
    names = [p.name for p in plugins]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ConfigError(f"solver.plugins lists {sorted(duplicated)} more than once")
    return plugins


__all__ = ["PLUGINS", "PluginContext", "TrainPlugin", "TrainableParts", "set_up_plugins", "validation_model",
           "check_plugin_spec", "plugin_specs", "create_plugins", "MixupPlugin", "EmaPlugin", "SVMixPlugin"]
