"""HMDB51 lists from ``testTrainMulti_7030_splits``: one ``<class>_test_split<N>.txt`` per class with
``video.avi 0|1|2`` per line (1 train, 2 test, 0 unused). Class ids are the sorted class names."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import InputNotFoundError
from .base import PREPARERS, Preparer, add_common_arguments, add_split_arguments
from .listio import annotation_error, iter_lines
from .resolver import Resolver, Sample, SplitResult, write_lists

NUM_CLASSES = 51


@PREPARERS.register("hmdb51")
class HMDB51(Preparer):
    summary = "HMDB51 from testTrainMulti_7030_splits"
    description = "HMDB51 lists from the per-class <class>_test_split<N>.txt files."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_split_arguments(parser, "the testTrainMulti_7030_splits folder")
        add_common_arguments(parser, tmpl="img_{:05d}.jpg", exts="avi")

    @staticmethod
    def build(*, splits_dir: str, split: int, out_dir: str, video_root: str | None = None,
              frames_root: str | None = None, tmpl: str = "img_{:05d}.jpg", exts: Sequence[str] = (".avi",),
              min_frames: int = 1) -> list[SplitResult]:
        """``train_split<N>_*.txt`` (label 1 entries) and ``val_split<N>_*.txt`` (label 2 entries)."""
        folder = Path(splits_dir)
        suffix = f"_test_split{split}.txt"
        if not folder.is_dir():
            raise InputNotFoundError(f"splits folder not found: {folder}")
        files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
        if not files:
            raise InputNotFoundError(f"no '*{suffix}' files in {folder}")
        names = sorted(p.name[: -len(suffix)] for p in files)
        if len(names) != NUM_CLASSES:
            print(f"warning: found {len(names)} classes in {folder}, HMDB51 has {NUM_CLASSES}", file=sys.stderr)
        splits: dict[str, list[Sample]] = {"train": [], "val": []}
        for i, name in enumerate(names):
            path = folder / f"{name}{suffix}"
            for lineno, text in iter_lines(path):
                parts = text.split()
                if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                    raise annotation_error(path, lineno, f"expected 'video.avi 0|1|2', got {text!r}")
                if parts[1] == "0":
                    continue
                stem = os.path.splitext(parts[0])[0]
                sample = Sample(key=f"{name}/{parts[0]}", label=i, candidates=[f"{name}/{stem}"])
                splits["train" if parts[1] == "1" else "val"].append(sample)
        resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
        return write_lists(out_dir, names, splits, resolver, suffix=f"_split{split}")
