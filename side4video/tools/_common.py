"""Small pieces shared by the inference and feature tools (private: not a public API)."""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch


def add_config_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--config`` and ``--opts`` exactly as train.py/test.py take them."""
    parser.add_argument("--config", required=required, help="Side4Video-style YAML config")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --opts data.workers=0 network.pretrained=w.safetensors "
                             "(values read as YAML)")


def load_tool_config(config: str, opts: Sequence[str]):
    """The validated config (a DotMap), as train.py would see it."""
    from ..config import load_config
    return load_config(config, list(opts or []))


def default_device() -> torch.device:
    """The first GPU when there is one (single-process tools), else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` so that readers never see half a file (see ``engine.checkpoint.atomic_write``)."""
    from ..engine.checkpoint import atomic_write
    atomic_write(path, lambda handle: handle.write(data))


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


def format_number(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (readable in a terminal, pasteable into a README); numbers right-aligned."""
    cells = [[format_number(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.rjust(w) if num else v.ljust(w)
                                 for v, w, num in zip(values, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule] + [line(row) for row in cells])


def fail(message: str, code: int = 2) -> int:
    """Print a one-line error (no traceback: the message names the file, key or video) and return ``code``."""
    from ..cli import fail as cli_fail
    return cli_fail(message, code)
