"""UCF101 lists from ``ucfTrainTestlist``: ``classInd.txt`` (``1 ApplyEyeMakeup``, 1-indexed),
``trainlist0N.txt`` (``Class/v_X.avi idx``) and ``testlist0N.txt`` (``Class/v_X.avi``). Labels are the
``classInd`` index - 1; the val list is the official test list of the split."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from .base import PREPARERS, Preparer, add_common_arguments, add_split_arguments
from .listio import annotation_error, iter_lines
from .resolver import Resolver, Sample, SplitResult, write_lists


def read_ucf_classes(path: str | os.PathLike) -> list[str]:
    """``classInd.txt``: ``1 ApplyEyeMakeup`` ... (1-indexed); returns names by 0-based id."""
    names: list[str] = []
    for lineno, text in iter_lines(path):
        parts = text.split()
        if len(parts) != 2:
            raise annotation_error(path, lineno, f"expected 'index name', got {text!r}")
        try:
            idx = int(parts[0])
        except ValueError:
            raise annotation_error(path, lineno, f"class index {parts[0]!r} is not an integer") from None
        if idx != len(names) + 1:
            raise annotation_error(path, lineno, f"class index {idx} out of order: expected {len(names) + 1}")
        names.append(parts[1])
    if not names:
        raise annotation_error(path, None, "no classes")
    return names


def read_ucf_split(path: str | os.PathLike, names: Sequence[str], with_label: bool) -> list[Sample]:
    """``trainlist0N.txt`` (``Class/v_X.avi idx``) or ``testlist0N.txt`` (``Class/v_X.avi``)."""
    by_dir = {n.lower(): i for i, n in enumerate(names)}   # folder case differs for HandstandPushups files
    samples = []
    for lineno, text in iter_lines(path):
        parts = text.split()
        if len(parts) != (2 if with_label else 1):
            want = "'Class/video.avi index'" if with_label else "'Class/video.avi'"
            raise annotation_error(path, lineno, f"expected {want}, got {text!r}")
        rel = parts[0].replace("\\", "/")
        folder, _, fname = rel.rpartition("/")
        if not folder or not fname:
            raise annotation_error(path, lineno, f"expected 'Class/video.avi', got {rel!r}")
        dir_idx = by_dir.get(folder.lower())
        if with_label:
            try:
                idx = int(parts[1]) - 1
            except ValueError:
                raise annotation_error(path, lineno, f"class index {parts[1]!r} is not an integer") from None
            if not 0 <= idx < len(names):
                raise annotation_error(path, lineno, f"class index {idx + 1} outside 1..{len(names)}")
            if dir_idx is not None and dir_idx != idx:
                raise annotation_error(path, lineno, f"index {idx + 1} ({names[idx]}) disagrees with the "
                                       f"folder {folder!r}")
        else:
            if dir_idx is None:
                raise annotation_error(path, lineno, f"folder {folder!r} is not a class of classInd.txt")
            idx = dir_idx
        stem = os.path.splitext(rel)[0]
        samples.append(Sample(key=rel, label=idx, candidates=[stem]))
    return samples


@PREPARERS.register("ucf101")
class UCF101(Preparer):
    summary = "UCF101 from ucfTrainTestlist"
    description = "UCF101 lists from classInd.txt, trainlist0N.txt and testlist0N.txt."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_split_arguments(parser, "the ucfTrainTestlist folder")
        add_common_arguments(parser, tmpl="img_{:05d}.jpg", exts="avi")

    @staticmethod
    def build(*, splits_dir: str, split: int, out_dir: str, video_root: str | None = None,
              frames_root: str | None = None, tmpl: str = "img_{:05d}.jpg", exts: Sequence[str] = (".avi",),
              min_frames: int = 1) -> list[SplitResult]:
        """``train_split<N>_*.txt`` and ``val_split<N>_*.txt`` (val = the official test list)."""
        folder = Path(splits_dir)
        names = read_ucf_classes(folder / "classInd.txt")
        splits = {"train": read_ucf_split(folder / f"trainlist{split:02d}.txt", names, with_label=True),
                  "val": read_ucf_split(folder / f"testlist{split:02d}.txt", names, with_label=False)}
        resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
        return write_lists(out_dir, names, splits, resolver, suffix=f"_split{split}")
