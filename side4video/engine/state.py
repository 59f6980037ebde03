"""Where a run is (:class:`TrainState`) and the files that keep it (:class:`CheckpointKeeper`).

The keeper owns ``checkpoints/``: ``last.pt`` (the newest position), ``best.pt`` (the best validation), and, until
the newest ``last.pt`` has produced a finite loss, the one before it as ``.last.previous.pt`` (a divergence rolls
back to it). The previous file stays in place until the new one is completely written and renamed over
``last.pt``; a write that fails (a full disk, a kill) leaves the last good checkpoint where it was, and a start that
finds only ``.last.previous.pt`` resumes from it.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..files import atomic_copy, atomic_save, remove_stale_temporaries


def _fresh_totals() -> dict[str, Any]:
    return {"loss_sum": 0.0, "loss_count": 0, "clips": 0}


@dataclass
class TrainState:
    """The position of a run: ``epoch`` and ``step_in_epoch`` (micro-batches done in it), ``global_step``
    (micro-batches since the start), the best validation value of the task's monitored metric so far (-inf: none),
    and the running totals of the current epoch (so a resumed epoch's mean loss counts every step)."""
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float = -math.inf
    epoch_totals: dict[str, Any] = field(default_factory=_fresh_totals)

    def position(self) -> dict[str, Any]:
        """What a checkpoint stores of the position (``best_top1`` kept for readers of the first format)."""
        best = self.best_metric if math.isfinite(self.best_metric) else -1.0
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "best_metric": best, "best_top1": best, "epoch_totals": dict(self.epoch_totals)}

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> "TrainState":
        best = float(checkpoint.get("best_metric", checkpoint.get("best_top1", -1.0)))
        return cls(epoch=int(checkpoint["epoch"]), step_in_epoch=int(checkpoint["step_in_epoch"]),
                   global_step=int(checkpoint["global_step"]), best_metric=best if best >= 0 else -math.inf,
                   epoch_totals={**_fresh_totals(), **dict(checkpoint.get("epoch_totals", {}))})

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step_in_epoch, self.epoch_totals = epoch, 0, _fresh_totals()

    def improves(self, value: float | None) -> bool:
        return value is not None and value > self.best_metric

    @property
    def best(self) -> float | None:
        return self.best_metric if math.isfinite(self.best_metric) else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckpointKeeper:
    """Writes, confirms, rolls back and promotes the checkpoints of one run folder. Only the main process writes;
    every method is a no-op elsewhere (``writer=False``)."""

    LAST, BEST, PREVIOUS = "last.pt", "best.pt", ".last.previous.pt"

    def __init__(self, folder: str | Path, writer: bool = True):
        self.folder = Path(folder)
        self.writer = writer
        self.unconfirmed = False       # the newest last.pt has not yet produced a finite loss
        self.last_saved_step: int | None = None

    @property
    def last(self) -> Path:
        return self.folder / self.LAST

    @property
    def best(self) -> Path:
        return self.folder / self.BEST

    @property
    def previous(self) -> Path:
        return self.folder / self.PREVIOUS

    def clean_stale(self) -> list[Path]:
        """Remove what killed writes left behind (temporary files of processes that are gone)."""
        return remove_stale_temporaries(self.folder) if self.writer else []

    def resumable(self) -> tuple[Path | None, str | None]:
        """The checkpoint ``resume: auto`` continues, and a note when it is not ``last.pt`` (a write of last.pt was
        interrupted after the previous one had been set aside)."""
        if self.last.is_file():
            return self.last, None
        if self.previous.is_file():
            return self.previous, (f"{self.last} is missing but {self.previous.name} is there (a checkpoint write "
                                   "was interrupted); resuming from it")
        return None, None

    def save_last(self, checkpoint: Mapping[str, Any], global_step: int) -> None:
        """``last.pt`` ← ``checkpoint``; the file it replaces is kept as ``.last.previous.pt`` until
        :meth:`confirm`. At every moment one complete ``last.pt`` (or, before the first, none) exists."""
        if self.writer:
            new = self.folder / f".{self.LAST}.new"
            atomic_save(checkpoint, new)           # the old last.pt is untouched until this is complete
            if self.last.is_file():
                self._set_previous()
            os.replace(new, self.last)
        self.unconfirmed = True
        self.last_saved_step = global_step

    def _set_previous(self) -> None:
        """``.last.previous.pt`` ← the current ``last.pt``, which stays in place (a hard link, else a copy)."""
        staged = self.folder / f".{self.PREVIOUS}.link"
        staged.unlink(missing_ok=True)
        try:
            os.link(self.last, staged)
        except OSError:                            # a file system without hard links
            atomic_copy(self.last, staged)
        os.replace(staged, self.previous)

    def confirm(self) -> None:
        """The newest ``last.pt`` produced a finite loss: the one kept aside is no longer needed."""
        self.unconfirmed = False
        if self.writer:
            self.previous.unlink(missing_ok=True)

    def roll_back(self) -> None:
        """The newest ``last.pt`` holds weights whose loss was not finite: bring back the one before it (or remove
        it when there is none)."""
        if self.writer and self.unconfirmed:
            if self.previous.is_file():
                os.replace(self.previous, self.last)
            else:
                self.last.unlink(missing_ok=True)
        self.unconfirmed = False

    def promote_best(self) -> None:
        """``best.pt`` ← ``last.pt`` (copied atomically)."""
        if self.writer:
            atomic_copy(self.last, self.best)


__all__ = ["TrainState", "CheckpointKeeper"]
