"""Something-Something v2 lists from ``labels.json``, ``train.json`` and ``validation.json``. Videos are
``<id>.webm``; the class of an entry is its ``template`` without the brackets."""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from .base import PREPARERS, Preparer, add_common_arguments
from .listio import annotation_error, iter_json_array, load_json, name_index, name_key
from .resolver import Resolver, Sample, SplitResult, write_lists
from .something import compare_with_sth_labels, sth_csv_name


def read_sthv2_labels(path: str | os.PathLike) -> list[str]:
    """SSv2 ``labels.json``: ``{"<class name>": "<id>", ...}`` with ids 0..173."""
    data = load_json(path)
    if not isinstance(data, dict) or not data:
        raise annotation_error(path, 1, "expected a JSON object mapping class name -> id")
    by_id: dict[int, str] = {}
    for name, idx in data.items():
        try:
            i = int(idx)
        except (TypeError, ValueError):
            raise annotation_error(path, None, f"id of class {name!r} is not an integer: {idx!r}") from None
        if i in by_id:
            raise annotation_error(path, None, f"classes {by_id[i]!r} and {name!r} share id {i}")
        by_id[i] = name
    if sorted(by_id) != list(range(len(by_id))):
        raise annotation_error(path, None, f"class ids must be 0..{len(by_id) - 1} without gaps")
    return [by_id[i] for i in range(len(by_id))]


def read_sthv2_split(path: str | os.PathLike, index: dict[str, int]) -> list[Sample]:
    """SSv2 ``train.json`` / ``validation.json``: entries with ``id`` and ``template`` ("Putting [something]
    onto [something]"); the class is the template without its brackets."""
    samples = []
    for lineno, entry in iter_json_array(path):
        if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
            raise annotation_error(path, lineno, "entry needs 'id' and 'template' keys")
        vid = str(entry["id"]).strip()
        template = str(entry["template"])
        name = template.replace("[", "").replace("]", "")
        idx = index.get(name_key(name))
        if not vid:
            raise annotation_error(path, lineno, "empty 'id'")
        if idx is None:
            raise annotation_error(path, lineno, f"entry id={vid!r}: template {template!r} is not a class "
                                   "of labels.json")
        samples.append(Sample(key=vid, label=idx, candidates=[vid]))
    return samples


@PREPARERS.register("sthv2")
class SomethingSomethingV2(Preparer):
    summary = "Something-Something v2 from the JSON annotations"
    description = "SSv2 lists from labels.json, train.json and validation.json; videos are {id}.webm."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--labels", required=True, help="labels.json")
        parser.add_argument("--train", required=True, help="train.json")
        parser.add_argument("--val", required=True, help="validation.json")
        add_common_arguments(parser, tmpl="{:06d}.jpg", exts="webm")

    @staticmethod
    def build(*, labels: str, train: str, val: str, out_dir: str, video_root: str | None = None,
              frames_root: str | None = None, tmpl: str = "{:06d}.jpg", exts: Sequence[str] = (".webm",),
              min_frames: int = 1) -> list[SplitResult]:
        """SSv2 lists: frames (``id num_frames label``) or videos (``id.webm label``)."""
        names = read_sthv2_labels(labels)
        index = name_index(names, str(labels))
        splits = {"train": read_sthv2_split(train, index), "val": read_sthv2_split(val, index)}
        compare_with_sth_labels(names, "SSv2 labels.json")
        resolver = Resolver(frames_root, video_root, tmpl, tuple(exts), min_frames)
        return write_lists(out_dir, [sth_csv_name(n) for n in names], splits, resolver)
