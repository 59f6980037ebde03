"""Run a command with an injected crash (a test-only hook that lives here, not in the code it tests).

    python -m tests.fault_injection train --kill-at-step N -- <train.py arguments>
    python -m tests.fault_injection train --interrupt-at-step N -- <train.py arguments>   (Ctrl-C)
    python -m tests.fault_injection extract --kill-after-shards N -- <extract_features arguments>

The process SIGKILLs itself right after global training step N (a plugin added to the trainer) or right after
writing N feature shards, as a crash would: no clean-up, no exception handlers.
"""
from __future__ import annotations

import os
import signal
import sys

from side4video.engine.plugins import TrainPlugin


class KillAtStep(TrainPlugin):
    """Sends ``sig`` (SIGKILL: a crash; SIGINT: Ctrl-C) to the process once global micro-step ``step`` has
    completed (and been checkpointed if one was due)."""

    name = "kill_at_step"

    def __init__(self, step: int, sig: int = signal.SIGKILL):
        self.step = step
        self.sig = sig
        self.seen = 0

    def on_batch(self, batch):
        self.seen += 1
        if self.seen > self.step:
            os.kill(os.getpid(), self.sig)
        return batch


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: python -m tests.fault_injection {train|extract} --kill-... N -- ARGS")
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def main(argv: list[str]) -> int:
    options, rest = _split(argv)
    mode, flag, value = options[0], options[1], int(options[2])
    if mode == "train" and flag in ("--kill-at-step", "--interrupt-at-step"):
        from side4video.cli import train_main
        sig = signal.SIGKILL if flag == "--kill-at-step" else signal.SIGINT
        return train_main(rest, plugins=[KillAtStep(value, sig)])
    if mode == "extract" and flag == "--kill-after-shards":
        from side4video.tools import extract_features
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
