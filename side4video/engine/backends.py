"""Optimizer backends: how a step's loss becomes an update, behind one small interface.

* :class:`DeepSpeedBackend` — training (``train.py``): DeepSpeed's engine on one CPU, one GPU or many nodes (ZeRO,
  bf16/fp16 autocast, gradient accumulation and clipping as DeepSpeed does them).
* :class:`TorchBackend` — plain PyTorch for one process with many models (the ablation runner, the benchmark):
  the same accumulation, clipping and autocast written with torch's own tools (a ``GradScaler`` for fp16).

Interface: ``module`` (what is trained), ``forward(inputs)`` (the module under the backend's precision),
``backward(loss)``, ``step()``, ``at_boundary()`` (whether the next ``step`` completes an optimizer step),
``optimizer_steps``, ``micro_steps``, ``lr()``, ``train()``, and the checkpoint state (``optimizer_states``,
``scheduler_state``, ``counters``, ``load_state``).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from . import deepspeed_adapter
from .optim import base_lr, lr_factor_fn


class TorchBackend:
    """Plain torch: ``optimizer`` and ``scheduler`` (per optimizer step) over ``module``'s parameters."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler, *, device: torch.device,
                 precision: str = "fp32", accumulation: int = 1, clip_gradient: float = 0.0):
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.device = device
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.accumulation = int(accumulation)
        self.clip = float(clip_gradient or 0.0)
        self.micro_steps = 0
        self.optimizer_steps = 0

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward(self, inputs) -> torch.Tensor:
        with self._autocast():
            return self.module(inputs)

    def at_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.accumulation == 0

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss / self.accumulation).backward()

    def step(self) -> None:
        boundary = self.at_boundary()
        self.micro_steps += 1
        if not boundary:
            return
        if self.clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.optimizer_steps += 1

    def lr(self) -> float:
        return base_lr(self.optimizer.param_groups)

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)

    # -- checkpoint state (the layout DeepSpeedBackend writes too) -------------------------------------------------
    def optimizer_states(self) -> list[dict[str, Any]]:
        return [self.optimizer.state_dict()]

    def scheduler_state(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def counters(self, samples_per_micro_step: int) -> dict[str, int]:
        return {"micro_steps": self.micro_steps, "global_steps": self.optimizer_steps,
                "global_samples": self.micro_steps * samples_per_micro_step}

    def load_state(self, optimizer_states: Sequence[Mapping[str, Any]], scheduler_state: Mapping[str, Any],
                   counters: Mapping[str, int] | None, rank: int = 0) -> None:
        self.optimizer.load_state_dict(optimizer_states[min(rank, len(optimizer_states) - 1)])
        self.scheduler.load_state_dict(scheduler_state)
        if counters:
            self.micro_steps, self.optimizer_steps = counters["micro_steps"], counters["global_steps"]


class DeepSpeedBackend:
    """DeepSpeed's engine (``deepspeed.initialize`` on ``module`` with our optimizer and schedule)."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler, config: dict[str, Any]):
        import deepspeed  # deferred: heavy, and it must see the accelerator environment set up first
        self.engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=config)

    @property
    def module(self) -> nn.Module:
        return self.engine.module

    def forward(self, inputs) -> torch.Tensor:
        return self.engine(inputs)

    def at_boundary(self) -> bool:
        return self.engine.is_gradient_accumulation_boundary()

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    @property
    def optimizer_steps(self) -> int:
        return int(self.engine.global_steps)

    @property
    def micro_steps(self) -> int:
        return int(self.engine.micro_steps)

    def lr(self) -> float:
        # not engine.get_lr()[0]: the first group may be a part at a fraction of the rate (see base_lr)
        return base_lr(self.engine.optimizer.param_groups)

    def train(self, mode: bool = True) -> None:
        self.engine.train(mode)

    @property
    def zero(self) -> bool:
        return bool(self.engine.zero_optimization())

    # -- checkpoint state ------------------------------------------------------------------------------------------
    def optimizer_state(self) -> dict[str, Any]:
        """This rank's optimizer state (with ZeRO: its partition; the trainer gathers them)."""
        return self.engine.optimizer.state_dict()

    def scheduler_state(self) -> dict[str, Any]:
        return self.engine.lr_scheduler.state_dict()

    def counters(self, samples_per_micro_step: int | None = None) -> dict[str, int]:
        return deepspeed_adapter.counters(self.engine)

    def load_state(self, optimizer_states: Sequence[Mapping[str, Any]], scheduler_state: Mapping[str, Any],
                   counters: Mapping[str, int] | None, rank: int = 0) -> None:
        deepspeed_adapter.load_optimizer_state(self.engine, list(optimizer_states),
                                               min(rank, len(optimizer_states) - 1))
        self.engine.lr_scheduler.load_state_dict(scheduler_state)
        if counters:
            deepspeed_adapter.set_counters(self.engine, counters)

    def set_optimizer_step(self, optimizer_step: int, accumulation: int, samples_per_micro_step: int) -> None:
        """Put the step counters at ``optimizer_step`` (a resume that re-bases the run on another global batch)."""
        micro_steps = optimizer_step * accumulation
        deepspeed_adapter.set_counters(self.engine, {"global_steps": optimizer_step, "micro_steps": micro_steps,
                                                     "global_samples": micro_steps * samples_per_micro_step})

    def rebase_schedule(self, solver, steps_per_epoch: int, optimizer_step: int) -> None:
        """Continue the schedule at ``optimizer_step`` of a run of ``steps_per_epoch`` steps per epoch, with the
        current solver's values (lr, epochs, warm-up, ...): every group's lr is set for that step at once."""
        rebase_scheduler(self.engine.lr_scheduler, solver, steps_per_epoch, optimizer_step)


def rebase_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR, solver, steps_per_epoch: int,
                     optimizer_step: int) -> None:
    """Point a :func:`~side4video.engine.optim.create_scheduler` schedule at ``optimizer_step`` with ``solver``'s
    values, through the scheduler's public ``step`` (which sets the groups' lr and what ``get_last_lr`` reports)."""
    factor = lr_factor_fn(solver, steps_per_epoch)
    scheduler.base_lrs = [solver.lr * group.get("lr_mult", 1.0) for group in scheduler.optimizer.param_groups]
    scheduler.lr_lambdas = [factor] * len(scheduler.base_lrs)
    scheduler.last_epoch = optimizer_step - 1
    with warnings.catch_warnings():
        # "lr_scheduler.step() before optimizer.step()": deliberate here, nothing is skipped
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        scheduler.step()


__all__ = ["TorchBackend", "DeepSpeedBackend", "rebase_scheduler"]
