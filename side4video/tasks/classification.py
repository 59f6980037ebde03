"""Action recognition: class labels, cross-entropy, multi-view scores, top-k and per-class accuracy."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import TASKS, Evaluation, Task, TrainBatch
from .metrics import save_confusion
from .views import ScoreSet, collect_scores


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against hard labels (with label smoothing) or soft targets (mixup: smoothing is in them)."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=0.0 if targets.dim() == 2 else smoothing)


@TASKS.register("classification")
class ClassificationTask(Task):
    """One label per video; views (crops × clips) are averaged after a softmax each (the reference).

    Args:
        num_classes: the classifier's width (``data.num_classes``).
        smoothing: label smoothing of the cross-entropy (``solver.smoothing``).
    """

    name = "classification"
    monitor = "top1"

    def __init__(self, num_classes: int, smoothing: float = 0.0):
        self.num_classes = int(num_classes)
        self.smoothing = float(smoothing)

    def train_batch(self, raw: Mapping[str, Any], frames: torch.Tensor, mask: torch.Tensor | None,
                    device: torch.device) -> TrainBatch:
        labels = raw["label"].to(device, non_blocking=True)
        return TrainBatch(frames=frames, labels=labels, targets=labels, mask=mask)

    def loss(self, outputs: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
        return classification_loss(outputs, batch.targets, self.smoothing)

    def evaluate(self, backbone, model: nn.Module, loader, *, device: torch.device, mean: Sequence[float],
                 std: Sequence[float], assembler=None, precision: str = "fp32", progress: bool = False,
                 desc: str = "eval", average: str = "prob", max_views_per_forward: int = 64,
                 flip_permutation: torch.Tensor | None = None, progress_interval: float | None = None) -> Evaluation:
        scores = collect_scores(backbone, model, loader, device, mean=mean, std=std,
                                average=average, max_views_per_forward=max_views_per_forward, precision=precision,
                                progress=progress, desc=desc, flip_permutation=flip_permutation,
                                assembler=assembler, progress_interval=progress_interval)
        return self.evaluation(scores)

    def evaluation(self, scores: ScoreSet) -> Evaluation:
        """Metrics of a set of per-video scores."""
        summary = scores.metrics(self.num_classes)
        metrics = {"top1": summary["top1"], "top5": summary["top5"], "mean_class_acc": summary["mean_class_acc"],
                   "num_videos": int(len(scores.labels)), "num_views": int(scores.num_views),
                   "unreadable": len(scores.unreadable)}
        return Evaluation(metrics=metrics, details={"scores": scores, "summary": summary})

    def write_evaluation(self, evaluation: Evaluation, out_dir: Path, *, class_names: Sequence[str] = (),
                         prefix: str = "") -> None:
        summary = evaluation.details["summary"]
        save_confusion(summary["confusion"], class_names, out_dir, f"{prefix}confusion")
        with open(out_dir / f"{prefix}per_class_accuracy.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "name", "accuracy", "videos"])
            for index, (name, acc) in enumerate(zip(class_names, summary["per_class_acc"])):
                writer.writerow([index, name, "" if acc is None else f"{acc:.2f}",
                                 int(summary["confusion"][index].sum())])

    def describe(self, metrics: Mapping[str, Any]) -> str:
        return f"top-1 {metrics['top1']:.2f}  top-5 {metrics['top5']:.2f}"


__all__ = ["ClassificationTask", "classification_loss"]
