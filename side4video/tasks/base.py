"""What differs between tasks, behind one small interface: the targets of a batch, the loss, and how a model is
evaluated (views or captions scored, aggregated, turned into metrics and written).

The training step (``engine/step.py``), the trainer, the ablation runner and ``test.py`` only talk to a
:class:`Task`; a new task (text–video retrieval next to classification) is one new file registered with one line::

    @TASKS.register("my_task")
    class MyTask(Task): ...

and is chosen in a config by ``task: {type: my_task, ...}`` (or ``task: package.module:Class``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..registry import Registry


@dataclass
class TrainBatch:
    """One training step's data as the task and the plugins see it (every field may be replaced by a plugin)."""
    frames: torch.Tensor                  # normalised [B, T, 3, H, W] (float32)
    labels: torch.Tensor                  # int64 [B] (the task's own targets: class ids, caption ids, ...)
    targets: torch.Tensor                 # what the loss compares with: int64 [B] or soft [B, C]
    mask: torch.Tensor | None = None      # [B, F] valid frames (full-video clips), else None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """A task's evaluation of one model on one loader.

    ``metrics``: flat scalars for logs, ``metrics.jsonl`` and ``results.json`` (the task's ``monitor`` among them);
    ``details``: whatever the task keeps to write its files (scores, confusion matrices, similarity matrices)."""
    metrics: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base of every task. ``monitor`` is the validation metric (higher is better) that picks ``best.pt``."""

    name = "task"
    monitor = "score"

    def build_model(self, cfg, backbone) -> nn.Module | None:
        """The trainable model this task needs on ``backbone``; None: the recognition model of ``network.head``."""
        return None

    def build_datasets(self, cfg, seed: int) -> tuple[Any, Any, Any, Any] | None:
        """``(train_set, val_set, train_collate, val_collate)`` when the task reads data of its own kind (captions,
        ...); None: the annotation lists of ``data.*`` through the recognition datasets."""
        return None

    def train_batch(self, raw: Mapping[str, Any], frames: torch.Tensor, mask: torch.Tensor | None,
                    device: torch.device) -> TrainBatch:
        """The step's batch from a loader batch ``raw`` and its normalised ``frames`` (already on ``device``)."""
        raise NotImplementedError

    def loss(self, outputs: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
        """The task's loss of the model's outputs (plugins add their own terms)."""
        raise NotImplementedError

    def evaluate(self, backbone, model: nn.Module, loader, *, device: torch.device, mean: Sequence[float],
                 std: Sequence[float], assembler=None, precision: str = "fp32", progress: bool = False,
                 desc: str = "eval", average: str = "prob", max_views_per_forward: int = 64,
                 flip_permutation: torch.Tensor | None = None, progress_interval: float | None = None) -> Evaluation:
        """Score every item of ``loader`` with ``model`` (exact across processes) and compute the metrics."""
        raise NotImplementedError

    def write_evaluation(self, evaluation: Evaluation, out_dir: Path, *, class_names: Sequence[str] = (),
                         prefix: str = "") -> None:
        """Write the task's files for an evaluation into ``out_dir`` (main process only)."""

    def describe(self, metrics: Mapping[str, Any]) -> str:
        """One line of the metrics for the log."""
        return f"{self.monitor} {metrics.get(self.monitor)}"


TASKS: Registry[Task] = Registry("task", base=Task, name_attribute="name")

__all__ = ["TrainBatch", "Evaluation", "Task", "TASKS"]
