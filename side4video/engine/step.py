"""The training step, written once: what every trainer of this toolkit runs for one micro-batch.

    batch → plugins.on_batch → clip assembly (frozen backbone, no grad) → plugins.on_inputs
          → model → task.loss + Σ plugin.loss → backend.backward → backend.step → plugins.after_step (at a boundary)

The trainer (DeepSpeed), the ablation runner (plain torch, many models on one frozen pass), the memory/speed
benchmark and the tests all call :func:`train_step`; how the optimizer runs (DeepSpeed, or torch with its own
accumulation, clipping and loss scaling) is the backend's business (``engine/backends.py``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..data import batch_frames
from ..data.transforms import normalize_frames
from ..models import SideInputs, model_inputs
from ..plugins import TrainPlugin
from ..tasks import Task, TrainBatch


@dataclass
class StepParts:
    """What a step needs besides the batch and the backend. ``model`` is the trainable model that plugins see (the
    backend trains it together with the plugins' parts)."""
    backbone: Any                           # FrozenEncoder
    model: nn.Module
    task: Task
    assembler: Any = None                   # None: tap the backbone on the sampled frames
    plugins: Sequence[TrainPlugin] = field(default_factory=list)


def make_batch(raw: Mapping[str, Any], task: Task, device: torch.device, mean: Sequence[float],
               std: Sequence[float]) -> TrainBatch:
    """A loader batch → the step's :class:`TrainBatch` on ``device`` (frames augmented here when the workers only
    decoded them, ``data.augment_on: device``; normalised; the task's targets)."""
    frames = normalize_frames(batch_frames(raw, device), mean, std)
    mask = raw.get("mask")
    if mask is not None:
        mask = mask.to(device, non_blocking=True)
    return task.train_batch(raw, frames, mask, device)


def forward_loss(parts: StepParts, batch: TrainBatch, forward: Callable[[SideInputs], torch.Tensor],
                 inputs: SideInputs | None = None) -> torch.Tensor:
    """Plugins, frozen backbone, model, the task's loss plus every plugin's terms. ``inputs``: SideInputs the
    caller assembled already (the ablation runner's shared backbone pass); None: assemble them here."""
    for plugin in parts.plugins:
        batch = plugin.on_batch(batch)
    if inputs is None:
        inputs = model_inputs(parts.backbone, parts.model, batch.frames, parts.assembler, batch.mask)
    for plugin in parts.plugins:
        inputs = plugin.on_inputs(inputs, batch)
    outputs = forward(inputs)
    total = parts.task.loss(outputs, batch)
    for plugin in parts.plugins:
        for term in plugin.loss(outputs, inputs, batch, parts.model).values():
            total = total + term
    return total


def train_step(parts: StepParts, batch: TrainBatch, backend, *, inputs: SideInputs | None = None,
               measure: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """One micro-batch: forward and loss, backward, the optimizer step at an accumulation boundary, then the
    plugins' ``after_step``. Returns the loss as a device tensor (reading it would synchronise).

    ``measure``: a context (e.g. a saved-tensor meter's hooks) around the forward and loss."""
    boundary = backend.at_boundary()       # whether this micro-batch completes an optimizer step
    with measure() if measure is not None else contextlib.nullcontext():
        loss = forward_loss(parts, batch, backend.forward, inputs)
    backend.backward(loss)
    backend.step()
    if boundary:
        for plugin in parts.plugins:
            plugin.after_step(backend.optimizer_steps, parts.model)
    return loss.detach()


__all__ = ["StepParts", "make_batch", "forward_loss", "train_step"]
