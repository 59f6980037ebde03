"""An exponential moving average of the model (timm's ``ModelEmaV3``) as a training plugin."""
from __future__ import annotations

from typing import Any, Mapping

from timm.utils import ModelEmaV3
from torch import nn

from ..errors import ConfigError
from .base import PLUGINS, PluginContext, TrainPlugin


@PLUGINS.register("ema")
class EmaPlugin(TrainPlugin):
    """An exponential moving average of the trainable model (timm ``ModelEmaV3``: θ_ema ← d·θ_ema + (1−d)·θ after
    every optimizer step, buffers included), validated instead of the model and saved in the checkpoints."""

    name = "ema"

    def __init__(self, decay: float = 0.999, warmup: bool = False, validate: bool = True):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup, self.validate = decay, warmup, validate
        self.ema = None

    def setup(self, ctx: PluginContext) -> None:
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
        if self.validate:   # the validated model: the checkpoint holds it once, as its eval_model
            return {}
        return {"module": {k: v.detach().to("cpu", copy=True) for k, v in self.ema.module.state_dict().items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "module" in state:   # also in checkpoints written before eval_model carried the validated EMA
            self.ema.module.load_state_dict(state["module"])
