"""Something-Something v1 frames lists. SSv1 ships as JPEG folders ``<id>/00001.jpg``; its annotations are
``something-something-v1-labels.csv`` (one class name per line) and ``...-{train,validation}.csv``
(``id;label`` per line). Class ids are the sorted names (the TSM/TRN convention)."""
from __future__ import annotations

import argparse
import os

from .base import PREPARERS, Preparer, add_common_arguments
from .listio import annotation_error, iter_lines, name_index, name_key
from .resolver import Resolver, Sample, SplitResult, write_lists
from .something import compare_with_sth_labels, sth_csv_name


def read_sthv1_labels(path: str | os.PathLike) -> list[str]:
    """SSv1 ``something-something-v1-labels.csv``: one class name per line; id = position after sorting."""
    names = []
    seen: dict[str, int] = {}
    for lineno, text in iter_lines(path):
        if ";" in text:
            raise annotation_error(path, lineno, "expected one class name per line, found ';' "
                                   "(is this a train/validation file?)")
        if text in seen:
            raise annotation_error(path, lineno, f"class {text!r} repeats line {seen[text]}")
        seen[text] = lineno
        names.append(text)
    if not names:
        raise annotation_error(path, None, "no class names")
    return sorted(names)      # plain code-point order, as TSM/TRN list generators do


def read_sthv1_split(path: str | os.PathLike, index: dict[str, int]) -> list[Sample]:
    """SSv1 ``something-something-v1-{train,validation}.csv``: ``id;label text`` per line."""
    samples = []
    for lineno, text in iter_lines(path):
        parts = text.split(";")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise annotation_error(path, lineno, f"expected 'id;label', got {text!r}")
        vid, label = parts[0].strip(), parts[1].strip()
        idx = index.get(name_key(label))
        if idx is None:
            raise annotation_error(path, lineno, f"label {label!r} is not in the label file")
        samples.append(Sample(key=vid, label=idx, candidates=[vid]))
    return samples


@PREPARERS.register("sthv1")
class SomethingSomethingV1(Preparer):
    summary = "Something-Something v1 (frames only)"
    description = "SSv1 frames lists; SSv1 is distributed as JPEG folders <id>/00001.jpg."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--labels", required=True, help="something-something-v1-labels.csv (one name per line)")
        parser.add_argument("--train", required=True, help="something-something-v1-train.csv ('id;label')")
        parser.add_argument("--val", required=True, help="something-something-v1-validation.csv ('id;label')")
        add_common_arguments(parser, tmpl="{:05d}.jpg", exts=None)

    @classmethod
    def argument_problem(cls, options: argparse.Namespace) -> str | None:
        if not options.frames_root:
            return "sthv1 needs --frames_root: SSv1 comes as frame folders, num_frames is counted there"
        return super().argument_problem(options)

    @staticmethod
    def build(*, labels: str, train: str, val: str, out_dir: str, frames_root: str, tmpl: str = "{:05d}.jpg",
              min_frames: int = 1) -> list[SplitResult]:
        """SSv1 frames lists (``id num_frames label``)."""
        names = read_sthv1_labels(labels)
        index = name_index(names, labels)
        splits = {"train": read_sthv1_split(train, index), "val": read_sthv1_split(val, index)}
        compare_with_sth_labels(names, "SSv1 labels")
        resolver = Resolver(frames_root=frames_root, tmpl=tmpl, min_frames=min_frames)
        return write_lists(out_dir, [sth_csv_name(n) for n in names], splits, resolver)
