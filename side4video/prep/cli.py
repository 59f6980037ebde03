"""Dataset preparation from the command line::

    python -m side4video.prep.cli kinetics --train_csv ... --val_csv ... --out_dir lists/k400   (also: side4video prep)
    python -m side4video.prep.cli frames SRC DST --short_side 320
    python -m side4video.prep.cli shards LIST --root DIR --out DIR --shard_size 1000

One subcommand per registered dataset preparer (``PREPARERS``: kinetics, sthv1, sthv2, ucf101, hmdb51) that builds
train/val lists and a label CSV, plus ``frames``, which decodes videos into resumable frame folders, and ``shards``,
which packs a list's videos or frame folders into WebDataset tar shards (``data.format: webdataset``).
``datasets/build_lists.py`` and ``datasets/extract_frames.py`` are the same commands under their old names.

Bad input (a malformed annotation line, a missing file) prints one line ``error: <message>`` to stderr and exits
with status 2; a usage error exits with status 2 through argparse; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from ..tools.common import run_command
from . import PREPARERS
from .base import Preparer
from .frames import FrameExtraction
from .shards import ShardWriting

FRAMES_COMMAND = "frames"
SHARDS_COMMAND = "shards"
PROG = "side4video prep"
# where argparse keeps the chosen subcommand; not an option name of any command
_COMMAND_DEST = "_command"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: ...)' only for options whose default means something (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _run(body: Callable[[], Any]) -> int:
    """Run a command's body with the package's command runner: input errors become one line ``error: <message>``
    on stderr and exit status 2 (as these scripts always did)."""
    def run() -> int:
        body()
        return 0
    return run_command(run, code=2)


def commands(*, lists: bool = True, frames: bool = True) -> dict[str, type[Preparer]]:
    """Subcommand name -> the class that declares its options and does its work (``frames``: also the commands that
    are not list builders, ``frames`` and ``shards``)."""
    chosen: dict[str, type[Preparer]] = dict(PREPARERS.items()) if lists else {}
    if frames:
        chosen[FRAMES_COMMAND] = FrameExtraction
        chosen[SHARDS_COMMAND] = ShardWriting
    return chosen


def build_parser(prog: str | None = PROG, *, lists: bool = True,
                 frames: bool = True) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser with one subcommand per command, and each subcommand's own parser (for its usage errors)."""
    parser = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                     description="Build train/val annotation lists and a label CSV"
                                                 + (", extract frames, or write shards." if frames else "."))
    metavar = "COMMAND" if frames else "DATASET"
    sub = parser.add_subparsers(dest=_COMMAND_DEST, required=True, metavar=metavar)
    parsers = {}
    for name, command in commands(lists=lists, frames=frames).items():
        parsers[name] = sub.add_parser(name, formatter_class=HelpFormatter, help=command.summary,
                                       description=command.description or command.summary)
        command.add_arguments(parsers[name])
    return parser, parsers


def _execute(command: type[Preparer], options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    problem = command.argument_problem(options)
    if problem:
        parser.error(problem)                      # usage error: exits with status 2
    keywords = {key: value for key, value in vars(options).items() if key != _COMMAND_DEST}
    return _run(lambda: command.build(**keywords))


def _main(argv: Sequence[str] | None, prog: str | None, *, lists: bool, frames: bool) -> int:
    parser, parsers = build_parser(prog, lists=lists, frames=frames)
    options = parser.parse_args(argv)
    name = getattr(options, _COMMAND_DEST)
    return _execute(commands(lists=lists, frames=frames)[name], options, parsers[name])


def main(argv: list[str] | None = None) -> int:
    """``side4video prep COMMAND ...``: every preparer, ``frames`` and ``shards``."""
    return _main(argv, PROG, lists=True, frames=True)


def build_lists_main(argv: list[str] | None = None) -> int:
    """``datasets/build_lists.py DATASET ...``: the list builders only (the program name is the script's)."""
    return _main(argv, None, lists=True, frames=False)


def extract_frames_main(argv: list[str] | None = None) -> int:
    """``datasets/extract_frames.py SRC DST ...``: the ``frames`` command without its name."""
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter, description=FrameExtraction.description)
    FrameExtraction.add_arguments(parser)
    return _execute(FrameExtraction, parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
