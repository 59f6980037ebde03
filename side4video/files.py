"""Writing files so that nothing is ever half-written: the one home of atomic writes in the package.

Every writer goes through :func:`atomic_write`: the data goes into a temporary file in the same folder
(``.NAME.tmpPID``), is flushed to disk, and is renamed over the final name. A crash or a kill leaves either the
old file or the new one, never a mixture. A full disk (or quota) is a one-line :class:`DiskFullError` naming the
file, the free space and the space needed, never a traceback from deep inside ``torch.save``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .errors import Side4VideoError, TrainingError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(Side4VideoError, OSError):
    """A write failed because the disk (or the user's quota) is full."""

    def __str__(self) -> str:
        return str(self.strerror)


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"     # pragma: no cover


class OutputInUse(TrainingError):
    """Another run is writing to the same output folder."""


class OutputLock:
    """An exclusive lock on ``<output>/.lock`` held for the whole run, so that two runs never write one folder."""

    def __init__(self, folder: Path, what: str = "training run"):
        self.path = folder / ".lock"
        self.what = what
        self.handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise OutputInUse(f"{self.path.parent} is in use by another {self.what} ({owner}); wait for it to end "
                              "or pass another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _RecordingWriter:
    """A binary handle that remembers the OSError a write raised (``torch.save`` turns it into a RuntimeError that
    no longer says the disk was full) and counts the bytes written."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.error: OSError | None = None
        self.written = 0

    def write(self, data) -> int:
        try:
            count = self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.written += len(data) if count is None else count
        return count

    def flush(self) -> None:
        self.handle.flush()

    def fileno(self) -> int:
        return self.handle.fileno()


def _open_temporary(path: Path) -> BinaryIO:
    """Where atomic writes open their temporary file (one function, so tests can inject write failures)."""
    return open(path, "wb")


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], *, size_hint: int | None = None) -> None:
    """Write through ``write(handle)`` into a temporary file, flush it to disk, rename it over ``path``.

    ``size_hint``: the bytes the file will need, for the disk-full message."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    recorder: _RecordingWriter | None = None
    try:
        with _open_temporary(tmp) as handle:
            recorder = _RecordingWriter(handle)
            write(recorder)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        cause = exc if isinstance(exc, OSError) else (recorder.error if recorder is not None else None)
        if cause is not None and cause.errno in NO_SPACE_ERRNOS:
            raise _disk_full(path, size_hint, recorder.written if recorder else 0) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _disk_full(path: Path, size_hint: int | None, written: int) -> DiskFullError:
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    needed = f"about {human_bytes(size_hint)} needed" if size_hint else f"{human_bytes(written)} written before it"
    left = f"{human_bytes(free)} free" if free is not None else "free space unknown"
    return DiskFullError(errno.ENOSPC, f"cannot write {path}: no space left on the disk of {path.parent} ({left}, "
                                       f"{needed}); free some space or write elsewhere")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data), size_hint=len(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any, indent: int | None = 2) -> None:
    """Strict JSON (NaN/inf refused), written atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent, allow_nan=False) + "\n")


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor inside ``obj`` (nested dicts/lists): a checkpoint's size, roughly."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda handle: torch.save(obj, handle), size_hint=tensor_bytes(obj))


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy a finished file (e.g. last.pt → best.pt) so that ``target`` is never half-written."""
    with open(source, "rb") as handle:
        atomic_write(target, lambda out: shutil.copyfileobj(handle, out), size_hint=os.path.getsize(source))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that an atomic write killed midway leaves behind (``.NAME.tmpPID``) whose
    writing process is gone; returns what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(".*.tmp*"):
        pid = candidate.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["DiskFullError", "OutputInUse", "OutputLock", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "atomic_save", "atomic_copy", "remove_stale_temporaries", "process_alive",
           "tensor_bytes", "human_bytes"]
