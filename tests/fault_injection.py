"""Run a command with an injected fault (a test-only hook that lives here, not in the code it tests).

    python -m tests.fault_injection train --kill-at-step N [--rank R] -- <train.py arguments>       (a crash)
    python -m tests.fault_injection train --interrupt-at-step N [--rank R] -- <train.py arguments>  (Ctrl-C)
    python -m tests.fault_injection train --terminate-at-step N [--rank R] -- <train.py arguments>  (SIGTERM)
    python -m tests.fault_injection train --disk-full-at-save N -- <train.py arguments>
    python -m tests.fault_injection extract --kill-after-shards N -- <extract_features arguments>

The process sends itself the signal right after global training step N (a plugin added to the trainer; with
``--rank R`` only that process of a multi-process run), or its N-th checkpoint write (1-based) runs out of disk
space after a few bytes, or it SIGKILLs itself after writing N feature shards.
"""
from __future__ import annotations

import errno
import os
import signal
import sys

from side4video import files
from side4video.plugins import TrainPlugin
from side4video.tools import extract_features
from side4video.tools.train import main as train_main

SIGNALS = {"--kill-at-step": signal.SIGKILL, "--interrupt-at-step": signal.SIGINT,
           "--terminate-at-step": signal.SIGTERM}


class SignalAtStep(TrainPlugin):
    """Sends ``sig`` to its own process once global micro-step ``step`` has completed (and been checkpointed if one
    was due): at the start of the next step. ``rank``: only that process of a multi-process run does."""

    name = "signal_at_step"

    def __init__(self, step: int, sig: int = signal.SIGKILL, rank: int | None = None):
        self.step = step
        self.sig = sig
        self.rank = rank
        self.seen = 0
        self.sent = False

    def on_batch(self, batch):
        self.seen += 1
        mine = self.rank is None or int(os.environ.get("RANK", "0")) == self.rank
        if self.seen > self.step and mine and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)
        return batch


class FullDisk:
    """A file handle that refuses to write past a few bytes, as a full disk does (ENOSPC)."""

    def __init__(self, path):
        self.handle = open(path, "wb")
        self.written = 0

    def write(self, data):
        self.written += len(data)
        if self.written > 64:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.handle.name))
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()

    def fileno(self):
        return self.handle.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def disk_full_at_write(number: int) -> None:
    """The ``number``-th atomic write of a checkpoint (``*.pt``) and every later one find the disk full."""
    original = files._open_temporary
    writes = [0]

    def open_temporary(path):
        if ".pt" in path.name:
            writes[0] += 1
            if writes[0] >= number:
                return FullDisk(path)
        return original(path)

    files._open_temporary = open_temporary


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: python -m tests.fault_injection {train|extract} --FAULT N [--rank R] -- ARGS")
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv: list[str]) -> int:
    options, rest = _split(argv)
    mode, flag, value = options[0], options[1], int(options[2])
    rank = int(options[options.index("--rank") + 1]) if "--rank" in options else None
    if mode == "train" and flag in SIGNALS:
        return train_main(rest, plugins=[SignalAtStep(value, SIGNALS[flag], rank)])
    if mode == "train" and flag == "--disk-full-at-save":
        disk_full_at_write(value)
        return train_main(rest)
    if mode == "extract" and flag == "--kill-after-shards":
        original = extract_features.write_shard
        written = [0]

        def write_then_maybe_die(*args, **kwargs):
            original(*args, **kwargs)
            written[0] += 1
            if written[0] >= value:
                os.kill(os.getpid(), signal.SIGKILL)
        extract_features.write_shard = write_then_maybe_die
        return extract_features.main(rest)
    raise SystemExit(f"unknown fault injection {options}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
