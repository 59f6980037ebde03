"""What every command of the ``side4video`` console script shares: the error handling that turns input errors into
one line, argument types, the config arguments, the device, and small output helpers."""
from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from typing import Callable, Iterator, Sequence

from ..config import load_config
from ..engine.distributed import (
    barrier,
    cleanup,
    default_device,  # noqa: F401  (re-exported for the tools)
)
from ..errors import Side4VideoError
from ..files import atomic_write_bytes  # noqa: F401  (re-exported: the tools write through it)

# Operating-system errors a user causes (a read-only or full disk, a missing permission): one line, no traceback.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EISDIR,
               errno.ENOTDIR}


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fail(message: str, code: int = 2) -> int:
    """Print a one-line error (no traceback: the message names the file, key or video) and return ``code``."""
    if is_main_process():
        print(f"error: {message}", file=sys.stderr)
    return code


def run_command(body: Callable[[], int], *, interrupted: Callable[[], str] | None = None, code: int = 1) -> int:
    """Run a command's body: input errors (:class:`Side4VideoError`, user-caused OS errors) become one line on
    stderr and exit status ``code`` (or the error's own ``exit_status``, e.g. 130/143 for a run stopped by a
    signal); Ctrl-C one line and 130; anything else keeps its traceback."""
    try:
        status = body()
        _close_process_group()
        return status
    except Side4VideoError as exc:
        status = getattr(exc, "exit_status", None)
        if status is not None:          # a run that stopped cleanly: its message is not an error
            if is_main_process():
                print(f"\n{exc}", file=sys.stderr)
            return status
        return fail(str(exc), code=code)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", code=code)
    except KeyboardInterrupt:
        message = interrupted() if interrupted is not None else "interrupted"
        if is_main_process():
            print(f"\n{message}", file=sys.stderr)
        return 130


def _close_process_group() -> None:
    """After a command that succeeded on every process: wait for all, then destroy the process group. Left to
    interpreter exit, the group's teardown raced the rendezvous store of the first process (which may already have
    exited): "terminate called without an active exception" killed another process about 1 run in 5 (2-process
    retrieval runs on gloo)."""
    barrier()
    cleanup()


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--config`` and ``--opts`` exactly as train.py/test.py take them."""
    parser.add_argument("--config", required=required, help="Side4Video-style YAML config")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --opts data.workers=0 network.pretrained=w.safetensors "
                             "(values read as YAML)")


def add_launcher_arguments(parser: argparse.ArgumentParser) -> None:
    """Accepted for compatibility with the reference scripts and launchers; they carry nothing we need."""
    parser.add_argument("--log_time", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def load_tool_config(config: str, opts: Sequence[str]):
    """The validated config (a DotMap), as train.py would see it."""
    return load_config(config, list(opts or []))


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python and C level) to stderr, so ``--json`` output stays parseable."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
