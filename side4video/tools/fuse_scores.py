"""Fuse the per-video scores of several test runs (e.g. the "8+16 frames" ensembles of the paper tables).

    python -m side4video.tools.fuse_scores A/scores.npz B/scores.npz [--weights 1 1] [--out fused.npz]
                                           [--intersect] [--json]

Inputs are ``scores.npz`` files written by test.py (``scores [N, C]``, ``labels``, ``indices``,
``video_ids``, ``class_names``, ``protocol``). Videos are matched by ``video_ids``, so the files may list
them in different orders; by default every file must hold the same videos (``--intersect`` keeps the
common ones, with a warning). The fused score is the weighted mean of the score arrays. The scores are
already averaged over views, either softmax probabilities (test.py's default) or logits
(``--average logit``): files that record it in a ``score_average`` field must agree, since a mean of
probabilities and logits means nothing; files without the field are fused as they are. A file with NaN or
infinite scores (e.g. from a model that diverged) is refused, naming its first such video.

Prints top-1 / top-5 / mean class accuracy of every input and of the fusion (``--json``: one JSON document
instead) and writes the fused scores in the same npz format (plus ``sources`` and ``fusion_weights``).
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..engine.logging_utils import format_table
from ..errors import DataError, InputNotFoundError
from ..tasks.metrics import summarize
from .common import run_command

REQUIRED_FIELDS = ("scores", "labels", "video_ids")


@dataclass
class ScoreFile:
    """One ``scores.npz``; optional fields are None when the file lacks them."""
    path: str
    scores: np.ndarray          # [N, C]
    labels: np.ndarray          # [N]
    video_ids: list[str]
    indices: np.ndarray | None = None
    class_names: list[str] | None = None
    protocol: str | None = None
    score_average: str | None = None

    @property
    def num_classes(self) -> int:
        return int(self.scores.shape[1])


def read_scores(path: str | Path) -> ScoreFile:
    """Read and check one score file (raises ValueError/FileNotFoundError naming the file and field)."""
    path = str(path)
    if not Path(path).is_file():
        raise InputNotFoundError(f"score file not found: {path}")
    try:
        data = dict(np.load(path, allow_pickle=False))
    except Exception as exc:
        raise DataError(f"{path}: not a readable npz file ({exc})") from exc
    missing = [key for key in REQUIRED_FIELDS if key not in data]
    if missing:
        raise DataError(f"{path}: missing field(s) {missing}; expected a scores.npz written by test.py")
    scores, labels, ids = data["scores"], data["labels"], [str(v) for v in data["video_ids"].reshape(-1)]
    if scores.ndim != 2:
        raise DataError(f"{path}: 'scores' must be [videos, classes], got shape {scores.shape}")
    if not len(labels) == len(ids) == len(scores):
        raise DataError(f"{path}: 'scores' ({len(scores)}), 'labels' ({len(labels)}) and 'video_ids' ({len(ids)}) "
                         "must have one entry per video")
    if len(set(ids)) != len(ids):
        duplicate = next(v for i, v in enumerate(ids) if v in ids[:i])
        raise DataError(f"{path}: video id {duplicate!r} appears more than once")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise DataError(f"{path}: 'scores' must be real numbers, got dtype {scores.dtype}")
    scores = scores.astype(np.float32)  # checked after the cast: a float64 beyond float32's range becomes inf
    check_finite(path, scores, ids)

    def scalar(key: str) -> str | None:
        return str(data[key].reshape(-1)[0]) if key in data and data[key].size else None

    return ScoreFile(path=path, scores=scores, labels=labels.astype(np.int64), video_ids=ids,
                     indices=data["indices"].astype(np.int64) if "indices" in data else None,
                     class_names=[str(n) for n in data["class_names"].reshape(-1)] if "class_names" in data else None,
                     protocol=scalar("protocol"), score_average=scalar("score_average"))


def check_finite(path: str, scores: np.ndarray, video_ids: Sequence[str]) -> None:
    """Refuse NaN/inf scores: a NaN row has no meaningful arg-max, and the metrics disagree about it (top-1 counted
    such a video as right, mean class accuracy as wrong), so any fusion containing it would be a wrong number."""
    bad_rows = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad_rows.size:
        first = int(bad_rows[0])
        values = scores[first][~np.isfinite(scores[first])]
        raise DataError(f"{path}: non-finite scores ({', '.join(sorted({str(v) for v in values.tolist()}))}) for "
                        f"{bad_rows.size} of {len(scores)} videos, first {video_ids[first]!r}; fusing them would give "
                        "meaningless accuracies (re-run test.py for this model)")


def check_compatible(files: Sequence[ScoreFile]) -> str | None:
    """Same class count (and names) everywhere; one score kind. Returns the common ``score_average`` (or None)."""
    first = files[0]
    for other in files[1:]:
        if other.num_classes != first.num_classes:
            raise DataError(f"{other.path} has {other.num_classes} classes but {first.path} has {first.num_classes}")
        if first.class_names and other.class_names and other.class_names != first.class_names:
            warnings.warn(f"{other.path}: class names differ from {first.path}; fusing by class index", stacklevel=2)
    kinds = {f.score_average for f in files if f.score_average is not None}
    if len(kinds) > 1:
        listing = ", ".join(f"{f.path}: {f.score_average}" for f in files if f.score_average is not None)
        raise DataError(f"cannot fuse probabilities with logits ({listing}); re-run test.py with the same --average")
    return kinds.pop() if kinds else None


def align(files: Sequence[ScoreFile], intersect: bool = False) -> tuple[list[str], list[np.ndarray]]:
    """The fused video order (the first file's, restricted to common videos with ``intersect``) and, per file,
    the rows that hold those videos."""
    reference = files[0].video_ids
    common = set(reference)
    for other in files[1:]:
        ids = set(other.video_ids)
        if ids != set(reference) and not intersect:
            only_here, only_there = sorted(ids - set(reference)), sorted(set(reference) - ids)
            raise DataError(f"{other.path} does not hold the same videos as {files[0].path}: "
                             f"{len(only_here)} only in {other.path} (e.g. {only_here[:3]}), {len(only_there)} only "
                             f"in {files[0].path} (e.g. {only_there[:3]}); use --intersect to fuse the common videos")
        common &= ids
    order = [v for v in reference if v in common]
    if intersect and len(order) < max(len(f.video_ids) for f in files):
        warnings.warn(f"--intersect: fusing the {len(order)} videos common to all files "
                      f"(inputs hold {', '.join(str(len(f.video_ids)) for f in files)})", stacklevel=2)
    if not order:
        raise DataError("the score files have no video in common")
    rows = []
    for f in files:
        position = {v: i for i, v in enumerate(f.video_ids)}
        rows.append(np.array([position[v] for v in order], dtype=np.int64))
    labels = files[0].labels[rows[0]]
    for f, r in zip(files[1:], rows[1:]):
        differ = np.flatnonzero(f.labels[r] != labels)
        if differ.size:
            video = order[differ[0]]
            raise DataError(f"{f.path}: video {video!r} has label {f.labels[r][differ[0]]} but "
                             f"{labels[differ[0]]} in {files[0].path} ({differ.size} videos differ)")
    return order, rows


def fuse(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of aligned ``[N, C]`` score arrays."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(arrays):
        raise DataError(f"{len(w)} weights for {len(arrays)} score files")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise DataError(f"weights must be finite and non-negative with a positive sum, got {list(weights)}")
    total = sum(wi * a.astype(np.float64) for wi, a in zip(w, arrays))
    # finite inputs (read_scores) and weights keep a weighted mean finite: it lies between the inputs' extremes
    return (total / w.sum()).astype(np.float32)


def fuse_files(paths: Sequence[str | Path], weights: Sequence[float] | None = None, *, intersect: bool = False,
               out: str | Path | None = None) -> dict:
    """Read, align and fuse score files; write ``out`` if given. Returns per-input and fused metrics."""
    if len(paths) < 2:
        raise DataError("give at least two score files to fuse")
    files = [read_scores(p) for p in paths]
    weights = list(weights) if weights is not None else [1.0] * len(files)
    average = check_compatible(files)
    order, rows = align(files, intersect)
    aligned = [f.scores[r] for f, r in zip(files, rows)]
    labels = files[0].labels[rows[0]]
    fused = fuse(aligned, weights)
    num_classes = files[0].num_classes

    def metrics(scores: np.ndarray) -> dict:
        m = summarize(scores, labels, num_classes)
        return {"top1": m["top1"], "top5": m["top5"], "mean_class_acc": m["mean_class_acc"]}

    protocols = list(dict.fromkeys(f.protocol for f in files if f.protocol))
    result = {
        "num_videos": len(order), "num_classes": num_classes, "score_average": average,
        "inputs": [{"path": f.path, "weight": float(w), "protocol": f.protocol, **metrics(s)}
                   for f, w, s in zip(files, weights, aligned)],
        "fusion": {"protocol": "+".join(protocols) or None, **metrics(fused)}, "out": str(out) if out else None,
    }
    if out:
        save_fused(out, fused, labels, order, files, rows, weights, result["fusion"]["protocol"], average)
    return result


def save_fused(out: str | Path, scores: np.ndarray, labels: np.ndarray, video_ids: list[str],
               files: Sequence[ScoreFile], rows: Sequence[np.ndarray], weights: Sequence[float],
               protocol: str | None, average: str | None) -> None:
    """The fused scores in test.py's ``scores.npz`` layout."""
    first = files[0]
    fields = dict(scores=scores, labels=labels,
                  indices=first.indices[rows[0]] if first.indices is not None else np.arange(len(video_ids)),
                  video_ids=np.array(video_ids), class_names=np.array(first.class_names or []),
                  protocol=np.array(protocol or ""), sources=np.array([f.path for f in files]),
                  fusion_weights=np.asarray(weights, dtype=np.float64))
    if average is not None:
        fields["score_average"] = np.array(average)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as handle:  # a handle: np.savez would append ".npz" to other suffixes
        np.savez_compressed(handle, **fields)


def print_table(result: dict) -> None:
    rows = [[Path(r["path"]).as_posix(), r["weight"], r["protocol"] or "-", r["top1"], r["top5"], r["mean_class_acc"]]
            for r in result["inputs"]]
    fusion = result["fusion"]
    rows.append(["fusion", sum(r["weight"] for r in result["inputs"]), fusion["protocol"] or "-",
                 fusion["top1"], fusion["top5"], fusion["mean_class_acc"]])
    print(f"{result['num_videos']} videos, {result['num_classes']} classes"
          + (f", scores: {result['score_average']}" if result["score_average"] else ""))
    print(format_table(["scores", "weight", "protocol", "top-1", "top-5", "mean class"], rows))
    if result["out"]:
        print(f"fused scores -> {result['out']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m side4video.tools.fuse_scores",
                                     description=__doc__.split("\n\n")[0],
                                     epilog="Accuracies of the inputs are computed on the fused video set.")
    parser.add_argument("scores", nargs="+", help="scores.npz files written by test.py (two or more)")
    parser.add_argument("--weights", type=float, nargs="+", default=None,
                        help="one non-negative weight per file (default: equal weights)")
    parser.add_argument("--out", default=None, help="write the fused scores here (npz, test.py's format)")
    parser.add_argument("--intersect", action="store_true",
                        help="fuse the videos common to all files instead of requiring identical sets")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = parser.parse_args(argv)

    def body() -> int:
        result = fuse_files(args.scores, args.weights, intersect=args.intersect, out=args.out)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print_table(result)
        return 0
    return run_command(body, code=2)


if __name__ == "__main__":
    sys.exit(main())
