"""Kinetics-400/600/700 lists from the official CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``).

Clips are named ``{youtube_id}_{time_start:06d}_{time_end:06d}`` as the common downloaders save them.
"""
from __future__ import annotations

import argparse
import csv
import os
from typing import Sequence

from .base import PREPARERS, Preparer, add_common_arguments
from .listio import annotation_error, name_index, name_key, open_annotation, read_label_csv
from .resolver import Resolver, Sample, SplitResult, write_lists

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
LAYOUTS = ("auto", "class", "flat", "id")


def read_kinetics_csv(path: str | os.PathLike) -> list[tuple[int, str, str, str]]:
    """Rows of an official Kinetics CSV as ``(line, label_name, youtube_id, clip_name)``."""
    rows = []
    with open_annotation(path, newline="") as f:
        reader = csv.reader(f)
        header = None
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                miss = [c for c in KINETICS_COLUMNS if c not in header]
                if miss:
                    raise annotation_error(path, lineno, f"header lacks column(s) {', '.join(miss)}: expected "
                                           "'label,youtube_id,time_start,time_end,split[,is_cc]'")
                col = {c: header.index(c) for c in KINETICS_COLUMNS}
                continue
            if len(row) != len(header):
                raise annotation_error(path, lineno, f"expected {len(header)} fields like the header, got {len(row)}")
            label = row[col["label"]].strip().strip('"')
            yid = row[col["youtube_id"]].strip()
            if not label or not yid:
                raise annotation_error(path, lineno, "empty label or youtube_id")
            try:
                start = int(float(row[col["time_start"]]))
                end = int(float(row[col["time_end"]]))
            except ValueError:
                raise annotation_error(path, lineno, f"time_start/time_end must be numbers, got "
                                       f"{row[col['time_start']]!r}, {row[col['time_end']]!r}") from None
            rows.append((lineno, label, yid, f"{yid}_{start:06d}_{end:06d}"))
    if header is None:
        raise annotation_error(path, None, "empty annotation file")
    return rows


@PREPARERS.register("kinetics")
class Kinetics(Preparer):
    summary = "Kinetics-400/600/700 from the official CSVs"
    description = ("Kinetics lists from the official CSVs (label,youtube_id,time_start,time_end,split[,is_cc]). "
                   "Clips are named {youtube_id}_{start:06d}_{end:06d}.")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--train_csv", required=True)
        parser.add_argument("--val_csv", required=True)
        parser.add_argument("--labels", default=None,
                            help="'id,name' CSV fixing the class ids (default: sorted class names of --train_csv)")
        parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                            help="where clips are: 'class' = {label}/{clip}, 'flat' = {clip}, 'id' = {youtube_id}, "
                                 "'auto' = the first that exists (unchecked lists: 'class')")
        add_common_arguments(parser, tmpl="img_{:05d}.jpg", exts="mp4,mkv,webm")

    @staticmethod
    def build(*, train_csv: str, val_csv: str, out_dir: str, labels: str | None = None,
              video_root: str | None = None, frames_root: str | None = None, layout: str = "auto",
              tmpl: str = "img_{:05d}.jpg", exts: Sequence[str] = (".mp4", ".mkv", ".webm"),
              min_frames: int = 1) -> list[SplitResult]:
        """Kinetics lists.

        ``layout`` says where a clip is, relative to the root: 'class' = ``{label}/{clip}``, 'flat' = ``{clip}``,
        'id' = ``{youtube_id}`` (how the reference's K400 validation frames are named), 'auto' = the first of
        these three that exists. ``{clip}`` is ``{youtube_id}_{time_start:06d}_{time_end:06d}``.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        rows = {"train": read_kinetics_csv(train_csv), "val": read_kinetics_csv(val_csv)}
        csv_paths = {"train": train_csv, "val": val_csv}
        if labels:
            names = read_label_csv(labels)
        else:  # the usual convention: class ids = sorted class names of the training set
            names = sorted({label for _, label, _, _ in rows["train"]})
        index = name_index(names, str(labels or train_csv))

        splits: dict[str, list[Sample]] = {}
        for split, split_rows in rows.items():
            samples = []
            for lineno, label, yid, clip in split_rows:
                idx = index.get(name_key(label))
                if idx is None:
                    raise annotation_error(csv_paths[split], lineno,
                                           f"class {label!r} is not in {labels or 'the training classes'}")
                candidates = {"class": [f"{label}/{clip}"], "flat": [clip], "id": [yid],
                              "auto": [f"{label}/{clip}", clip, yid]}[layout]
                samples.append(Sample(key=f"{label}/{clip}", label=idx, candidates=candidates))
            splits[split] = samples
        resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
        return write_lists(out_dir, names, splits, resolver)
