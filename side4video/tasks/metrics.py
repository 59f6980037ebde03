"""Classification metrics on per-video scores, and the confusion matrix people would rather look at than read."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Percentage of videos whose label is among the k highest scores (k is capped at the class count)."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in ks:
        hits = (order[:, :min(k, scores.shape[1])] == labels[:, None]).any(axis=1)
        out[k] = float(hits.mean() * 100)
    return out


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``cm[true, predicted]`` counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, predictions), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per class in percent; NaN for classes without test videos."""
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1) * 100, np.nan)


def summarize(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1, top-5, mean class accuracy (over classes that have videos), per-class accuracy, confusion matrix."""
    top = topk_accuracy(scores, labels, (1, 5))
    cm = confusion_matrix(scores.argmax(axis=1), labels, num_classes) if len(labels) else \
        np.zeros((num_classes, num_classes), dtype=np.int64)
    per_class = per_class_accuracy(cm)
    present = ~np.isnan(per_class)
    return {"top1": top[1], "top5": top[5],
            "mean_class_acc": float(per_class[present].mean()) if present.any() else float("nan"),
            "per_class_acc": [None if np.isnan(v) else float(v) for v in per_class],
            "confusion": cm}


def save_confusion(cm: np.ndarray, class_names: Sequence[str], out_dir: str | Path, stem: str = "confusion") -> None:
    """``<stem>.csv`` (with class names) and ``<stem>.png`` (row-normalised heat map)."""
    out_dir = Path(out_dir)
    names = list(class_names)
    with open(out_dir / f"{stem}.csv", "w") as handle:
        handle.write("true\\predicted," + ",".join(_csv(n) for n in names) + "\n")
        for name, row in zip(names, cm):
            handle.write(_csv(name) + "," + ",".join(str(int(v)) for v in row) + "\n")
    import matplotlib  # deferred: a heavy import only plots need
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: a heavy import only plots need
    n = len(names)
    size = min(4 + 0.35 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
        ax.set_xticks(range(n), labels=names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels=names, fontsize=8)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (row-normalised)")
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=100)
    plt.close(fig)


def _csv(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text
