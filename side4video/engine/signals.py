"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends before preemption).

While training runs, a signal only raises a flag: every process finishes its step, the trainer writes a checkpoint
of the current position and ends with :class:`TrainingInterrupted` (exit status 130 for SIGINT, 143 for SIGTERM).
A second Ctrl-C stops at once. Outside the loop (set-up, a signal before the first step) it stops at once too.
The handlers are installed explicitly, so this holds however the process was started (a shell started in the
background gives its children SIGINT ignored: Python would then never raise KeyboardInterrupt).
"""
from __future__ import annotations

import signal
import threading
from types import FrameType

import torch
import torch.distributed as dist

from ..errors import Side4VideoError

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(Side4VideoError):
    """A signal stopped the run; ``message`` says where and how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = EXIT_STATUS.get(signum, 130)


class StopRequest:
    """Installs SIGINT/SIGTERM handlers for its ``with`` block (main thread only; elsewhere it does nothing).

    ``deferred``: when True a signal only raises :attr:`signum`; when False (set-up) it stops at once by raising
    KeyboardInterrupt / :class:`TrainingInterrupted`."""

    def __init__(self):
        self.signum: int | None = None
        self.deferred = False
        self._previous: dict[int, object] = {}
        self._control_group = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_STATUS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.deferred and self.signum is None:
            self.signum = signum
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise TrainingInterrupted("stopped by SIGTERM before training started; nothing was saved", signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def agreed(self) -> int | None:
        """The signal any process received (the same answer on every process), or None. With several processes
        the flags are combined over a CPU (gloo) group, so asking never waits for the accelerator."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
            return self.signum
        if self._control_group is None:
            self._control_group = dist.new_group(backend="gloo")
        flag = torch.tensor([self.signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._control_group)
        value = int(flag.item())
        if value and self.signum is None:
            self.signum = value
        return value or None


__all__ = ["EXIT_STATUS", "TrainingInterrupted", "StopRequest"]
