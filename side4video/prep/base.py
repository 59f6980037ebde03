"""The registry of dataset preparers, and the command-line options they share.

A preparer turns one dataset's official annotation files into TSN-style train/val lists and a label CSV. It is
a small class registered with one line; it declares its command-line arguments and a keyword-only build
function whose keywords are those arguments' names::

    @PREPARERS.register("ucf101")
    class UCF101(Preparer):
        summary = "UCF101 from ucfTrainTestlist"

        @staticmethod
        def add_arguments(parser): ...            # every option's dest is a keyword of build

        @staticmethod
        def build(*, splits_dir, split, out_dir, ...) -> list[SplitResult]: ...

``side4video.prep.cli`` makes one subcommand per entry and calls ``build(**options)``; code and tests call
``build`` with the same keywords. A new dataset is one file in this folder plus its import in ``__init__.py``.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..registry import Registry
from .listio import template_regex


class Preparer:
    """Base of every dataset preparer (see the module docstring)."""

    summary: str = ""        # one line in the list of subcommands
    description: str = ""    # the subcommand's --help text (the summary when empty)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Declare the options; each option's ``dest`` must be a keyword of :meth:`build`."""
        raise NotImplementedError

    @staticmethod
    def build(**options: Any) -> Any:
        """Do the work from the options, keyword-only in every subclass. List builders write the lists and the
        label CSV and return one :class:`~side4video.prep.resolver.SplitResult` per list."""
        raise NotImplementedError

    @classmethod
    def argument_problem(cls, options: argparse.Namespace) -> str | None:
        """A rule across options that argparse cannot state, as a usage error message (None: all is well)."""
        if getattr(options, "frames_root", None) and getattr(options, "video_root", None):
            return "give --frames_root (frames lists) or --video_root (video lists), not both"
        return None


PREPARERS: Registry[Preparer] = Registry("dataset preparer", base=Preparer)


def extensions(text: str) -> tuple[str, ...]:
    """``"mp4,.WebM"`` -> ``(".mp4", ".webm")`` (an argparse type)."""
    exts = tuple("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())
    if not exts:
        raise argparse.ArgumentTypeError("give at least one extension, e.g. mp4")
    return exts


def frame_template(text: str) -> str:
    """A frame file name template with exactly one field, such as ``img_{:05d}.jpg`` (an argparse type)."""
    try:
        template_regex(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_common_arguments(parser: argparse.ArgumentParser, *, tmpl: str, exts: str | None) -> None:
    """The output and root options of every list builder; ``exts=None`` for a dataset that ships frames only
    (no ``--video_root``/``--ext``)."""
    parser.add_argument("--out_dir", required=True, help="where the lists and labels.csv are written")
    parser.add_argument("--frames_root", default=None,
                        help="root of extracted frame folders: write frames lists, counting frames there")
    if exts is not None:
        parser.add_argument("--video_root", default=None,
                            help="root of the videos: write video lists, checking that each video exists "
                                 "(without either root: unchecked video lists)")
        parser.add_argument("--ext", dest="exts", metavar="EXT", type=extensions, default=exts,
                            help="video file extensions, the preferred first")
    parser.add_argument("--tmpl", type=frame_template, default=tmpl, help="frame file name template (1-indexed)")
    parser.add_argument("--min_frames", type=int, default=1, help="frame folders with fewer frames count as missing")


def add_split_arguments(parser: argparse.ArgumentParser, splits_dir_help: str) -> None:
    """``--splits_dir`` and ``--split`` of the datasets with three official splits (UCF101, HMDB51)."""
    parser.add_argument("--splits_dir", required=True, help=splits_dir_help)
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1)
