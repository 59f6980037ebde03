"""Top-k class predictions of a trained checkpoint for a video, a frame folder or a folder of videos.

    python -m side4video.tools.predict VIDEO_OR_DIR --weights CKPT [--config CFG.yaml] [--topk 5]
                                       [--test_crops N] [--test_clips K] [--json] [--opts ...]

The input is one video file, one frame folder (holding ``data.image_tmpl.format(1)``, e.g. ``img_00001.jpg``)
or a folder searched recursively for video files (by extension). The videos go through the test pipeline
itself: the found videos are handed to ``create_dataset(split='test')`` as records (same decoders, frame sampling,
crops and clips) and scored by ``collect_scores`` (per-view softmax, then the mean over views), so a video gets
exactly the scores test.py gives it with the same config and views. Without ``--config`` the config stored in
the checkpoint is used. Unreadable videos are reported one by one; the exit status is 1 when any was unreadable.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import ShardedEvalSampler, collate_eval, create_dataset, create_loader
from ..data.lists import VIDEO_EXTENSIONS, VideoRecord, is_video_file
from ..data.transforms import TEST_CROP_CHOICES
from ..engine.builders import backbone_from_config, config_for_checkpoint, load_trainable_weights, model_from_config
from ..engine.distributed import prepare_accelerator_env
from ..errors import DataError, InputNotFoundError
from ..models import create_assembler
from ..tasks.views import collect_scores
from .common import add_config_arguments, default_device, positive_int, run_command, stdout_to_stderr


@dataclass
class PredictInput:
    """What was found at the path the user gave: records relative to ``root``, and how to show each entry."""
    root: str
    records: list[VideoRecord]
    shown: list[str]
    problems: list[dict[str, Any]] = field(default_factory=list)   # entries that cannot even be listed


def count_frames(folder: Path, image_tmpl: str) -> int:
    """Frames 1, 2, ... present in ``folder`` (the count a frame-folder annotation line would carry)."""
    present = set(os.listdir(folder))
    count = 0
    while image_tmpl.format(count + 1) in present:
        count += 1
    return count


def find_inputs(path: str | Path, image_tmpl: str) -> PredictInput:
    """A video file, a frame folder, or every video file under a folder (sorted)."""
    path = Path(path)
    if path.is_file():
        if not is_video_file(path.name):
            raise DataError(f"{path} is not a video file (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
        return PredictInput(str(path.parent), [VideoRecord(path.name, None, 0, True)], [str(path)])
    if not path.is_dir():
        raise InputNotFoundError(f"no such video, frame folder or directory: {path}")
    if (path / image_tmpl.format(1)).is_file():
        folder = path.resolve()  # '.' or 'clip/' have no usable name of their own
        record = VideoRecord(folder.name, count_frames(folder, image_tmpl), 0, False)
        return PredictInput(str(folder.parent), [record], [str(path)])
    found = PredictInput(str(path), [], [])
    for folder, subfolders, files in os.walk(path):
        subfolders.sort()
        for name in sorted(files):
            if not is_video_file(name):
                continue
            relative = os.path.relpath(os.path.join(folder, name), path)
            found.records.append(VideoRecord(relative, None, 0, True, line=len(found.records) + 1))
            found.shown.append(os.path.join(str(path), relative))
    if not found.records and not found.problems:
        raise DataError(f"{path}: no video files found (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))}), "
                         f"and it is not a frame folder (no {image_tmpl.format(1)})")
    return found


def top_predictions(scores: np.ndarray, class_names: Sequence[str], k: int, average: str) -> list[dict[str, Any]]:
    """The k best classes of one video's aggregated scores, as probabilities (highest first)."""
    probs = scores.astype(np.float64)
    if average == "logit":  # the mean of logits is not a distribution: show its softmax
        probs = np.exp(probs - probs.max())
        probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"class_id": int(c), "name": class_names[c], "prob": float(probs[c])} for c in order]


def predict(cfg, weights: str | Path, path: str | Path, *, topk: int = 5, test_crops: int | None = None,
            test_clips: int | None = None, average: str = "prob", batch_size: int | None = None,
            workers: int | None = None, max_views: int = 64, progress: bool = True) -> list[dict[str, Any]]:
    """Per input video: ``{"video", "predictions": [{"class_id", "name", "prob"}], "error"}``, in input order."""
    found = find_inputs(path, cfg.data.image_tmpl)
    results: list[dict[str, Any]] = [{"video": shown, "predictions": [], "error": None} for shown in found.shown]
    if found.records:
        scores, class_names = score_videos(cfg, weights, found, test_crops=test_crops, test_clips=test_clips,
                                           average=average, batch_size=batch_size, workers=workers,
                                           max_views=max_views, progress=progress)
        for index, row in zip(scores.indices.tolist(), scores.scores):
            results[index]["predictions"] = top_predictions(row, class_names, topk, average)
        for bad in scores.unreadable:
            results[bad["index"]]["error"] = bad["reason"]
    return results + found.problems


def score_videos(cfg, weights: str | Path, found: PredictInput, *, test_crops: int | None, test_clips: int | None,
                 average: str, batch_size: int | None, workers: int | None, max_views: int, progress: bool):
    """test.py's scoring of the found videos: ``(ScoreSet, class names)``."""
    prepare_accelerator_env()  # checkpoint loading imports DeepSpeed, which warns when it must guess the device
    device = default_device()
    backbone = backbone_from_config(cfg, device)
    model = model_from_config(cfg, backbone)
    load_trainable_weights(model, weights, backbone, cfg)
    model.to(device).eval()
    # label 0 stands for "unknown": the records only carry paths to the test pipeline
    assembler = create_assembler(cfg.network.assembler)
    dataset = create_dataset(cfg.data, "test", test_crops=test_crops, test_clips=test_clips, seed=cfg.seed,
                            records=found.records, root=found.root, sampler=assembler.frame_sampler(cfg.data))
    workers = min(int(cfg.data.workers if workers is None else workers), len(dataset) - 1)
    loader = create_loader(dataset, batch_size=int(batch_size or cfg.data.batch_size),
                          sampler=ShardedEvalSampler(len(dataset)), num_workers=max(workers, 0),
                          collate_fn=assembler.collate_fn(False) or collate_eval)
    scores = collect_scores(backbone, model, loader, device, mean=cfg.data.mean, std=cfg.data.std,
                            average=average, max_views_per_forward=max_views,
                            precision=cfg.solver.precision, progress=progress, desc="predict",
                            flip_permutation=dataset.flip_permutation(),
                            assembler=assembler)
    return scores, dataset.class_names


def print_predictions(results: Sequence[dict[str, Any]]) -> None:
    for result in results:
        if result["error"]:
            print(f"{result['video']}: UNREADABLE ({result['error']})")
            continue
        print(result["video"])
        width = max(len(p["name"]) for p in result["predictions"])
        for rank, p in enumerate(result["predictions"], start=1):
            print(f"  {rank}. {p['name']:<{width}}  {p['prob']:.4f}  (class {p['class_id']})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video predict", description=__doc__.split("\n\n")[0],
                                     epilog="Class names come from data.label_list; views default to the config's "
                                            "data.test_crops / data.test_clips, as in test.py.")
    parser.add_argument("input", metavar="VIDEO_OR_DIR", help="a video file, a frame folder, or a folder of videos")
    add_config_arguments(parser, required=False)
    parser.add_argument("--weights", required=True, help="trained checkpoint (checkpoints/best.pt); its stored "
                                                         "config is used when --config is left out")
    parser.add_argument("--topk", type=positive_int, default=5, help="classes shown per video (default: 5)")
    parser.add_argument("--test_crops", type=int, default=None, choices=TEST_CROP_CHOICES,
                        help="spatial crops per clip (default: data.test_crops)")
    parser.add_argument("--test_clips", type=positive_int, default=None,
                        help="temporal clips per video (default: data.test_clips)")
    parser.add_argument("--average", default="prob", choices=("prob", "logit"),
                        help="prob: softmax per view then mean (as test.py); logit: mean of logits, shown as softmax")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="videos per forward (default: data.batch_size)")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: data.workers)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON list of {video, predictions: [{class_id, name, prob}], error}, "
                             "and nothing else, on stdout")
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args), code=2)


def _run(args) -> int:
    # in --json mode, whatever libraries print goes to stderr; stdout carries the document only
    with stdout_to_stderr() if args.json else contextlib.nullcontext():
        cfg = config_for_checkpoint(args.weights, args.config, args.opts)
        results = predict(cfg, args.weights, args.input, topk=args.topk, test_crops=args.test_crops,
                          test_clips=args.test_clips, average=args.average, batch_size=args.batch_size,
                          workers=args.workers)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_predictions(results)
    return 1 if any(r["error"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
