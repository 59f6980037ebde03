"""A toy text–video retrieval dataset in MSR-VTT's file layout, where a caption names a motion only frame order tells.

    python -m side4video.retrieval.toy --out DIR [--seed 0] [--train_per_pair 2] [--frames 16]
                                       [--height 64] [--width 80] [--formats frames,videos]

The videos are the recognition toy's (``side4video.data.toy``): an "F" moves right / left / down / up, rotates
either way, grows or shrinks; any single frame looks alike in every class. Here the object also has one of
``COLOURS`` (named in the caption), so a caption ("a red F sliding to the left") picks one video out of the 64
(motion, colour) pairs of the test split: the colour is visible in any frame, the motion only in the order of
frames. A frame-averaging model can find the colour but confuses a motion with its reverse.

Layout (the reference's MSR-VTT names, so ``data.train_csv`` / ``val_csv`` / ``data_path`` / ``features_path``
point at it like at the real dataset):

    msrvtt_data/MSRVTT_train.9k.csv      video_id                           training videos
    msrvtt_data/MSRVTT_JSFUSION_test.csv key,vid_key,video_id,sentence      one caption per test video (as 1k-A)
    msrvtt_data/MSRVTT_data.json         {"videos": [...], "sentences": [...]}  every training caption
    videos/video<N>.mp4                  mp4 (MPEG-4 part 2, yuv420p)
    frames/video<N>/00001.jpg ...        the same frames as JPEG files
    train.jsonl, test.jsonl              the toolkit's own format: {"video": "videos/video<N>.mp4", "captions": [...]}
    tiny_clip.safetensors                the tiny CLIP (image and text towers, random weights)

Deterministic from the seed; a complete dataset with the same arguments (``toy_retrieval_meta.json``) is kept.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..backbones.tiny import TINY_CLIP_CONFIG, make_tiny_backbone
from ..data.toy import CLASS_NAMES, render_clip, run_tasks, write_frame_folder, write_video
from ..files import atomic_write_json, atomic_write_text

COLOURS = {"red": (235, 40, 40), "green": (40, 225, 60), "blue": (60, 90, 245), "yellow": (240, 230, 40),
           "magenta": (235, 50, 225), "cyan": (40, 225, 235), "white": (245, 245, 245), "orange": (250, 150, 30)}
# Several phrasings per motion (``CLASS_NAMES`` order): training captions vary, so the text side must carry the
# motion, not one fixed sentence. ``{c}`` is the colour.
PHRASES = (
    ("a {c} F moving right", "the {c} letter slides to the right", "a {c} shape travels rightwards"),
    ("a {c} F moving left", "the {c} letter slides to the left", "a {c} shape travels leftwards"),
    ("a {c} F moving down", "the {c} letter slides downwards", "a {c} shape falls down"),
    ("a {c} F moving up", "the {c} letter slides upwards", "a {c} shape rises up"),
    ("a {c} F rotating clockwise", "the {c} letter turns clockwise", "a {c} shape spins clockwise"),
    ("a {c} F rotating counter-clockwise", "the {c} letter turns counter-clockwise",
     "a {c} shape spins anticlockwise"),
    ("a {c} F growing", "the {c} letter gets bigger", "a {c} shape expands"),
    ("a {c} F shrinking", "the {c} letter gets smaller", "a {c} shape contracts"),
)
FORMATS = ("frames", "videos")
META_VERSION = 1


def pairs() -> list[tuple[int, str]]:
    """Every (motion label, colour name), motion-major."""
    return [(label, colour) for label in range(len(CLASS_NAMES)) for colour in COLOURS]


def _render(task: tuple) -> None:
    out_dir, video_id, number, label, colour, seed, frames, height, width, formats = task
    rng = np.random.default_rng([seed, 7, number])
    clip, _ = render_clip(rng, label, frames, height, width, colour=COLOURS[colour])
    if "frames" in formats:
        write_frame_folder(os.path.join(out_dir, "frames", video_id), clip)
    if "videos" in formats:
        write_video(os.path.join(out_dir, "videos", f"{video_id}.mp4"), clip)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def generate_toy_retrieval(out_dir: str | Path, *, seed: int = 0, train_per_pair: int = 2, frames: int = 16,
                           height: int = 64, width: int = 80, formats: Sequence[str] = FORMATS,
                           workers: int | None = None) -> dict:
    """Write the dataset (skipped when complete with the same arguments). Returns the paths and counts."""
    out = Path(out_dir)
    formats = tuple(sorted(set(formats)))
    if not formats or not set(formats) <= set(FORMATS):
        raise ValueError(f"formats must be a subset of {FORMATS}, got {formats}")
    if train_per_pair < 1:
        raise ValueError("train_per_pair must be at least 1")
    meta = dict(version=META_VERSION, seed=seed, train_per_pair=train_per_pair, frames=frames, height=height,
                width=width, formats=list(formats))
    data_path = out / "msrvtt_data"
    paths = dict(root=str(out), data_path=str(data_path), train_csv=str(data_path / "MSRVTT_train.9k.csv"),
                 val_csv=str(data_path / "MSRVTT_JSFUSION_test.csv"), data_json=str(data_path / "MSRVTT_data.json"),
                 videos=str(out / "videos"), frames=str(out / "frames"), train_jsonl=str(out / "train.jsonl"),
                 test_jsonl=str(out / "test.jsonl"), weights=str(out / "tiny_clip.safetensors"))
    meta_file = out / "toy_retrieval_meta.json"
    if meta_file.is_file() and json.loads(meta_file.read_text()) == meta:
        return dict(paths, generated=False)
    meta_file.unlink(missing_ok=True)

    rng = np.random.default_rng([seed, 2 ** 30])
    train = [pair for pair in pairs() for _ in range(train_per_pair)]
    train = [train[i] for i in rng.permutation(len(train))]
    test = [pairs()[i] for i in rng.permutation(len(pairs()))]
    videos = [(f"video{n}", label, colour, "train") for n, (label, colour) in enumerate(train)]
    videos += [(f"video{len(train) + n}", label, colour, "test") for n, (label, colour) in enumerate(test)]
    tasks = [(str(out), video_id, number, label, colour, seed, frames, height, width, formats)
             for number, (video_id, label, colour, _) in enumerate(videos)]
    out.mkdir(parents=True, exist_ok=True)
    run_tasks(_render, tasks, workers)

    sentences, test_rows, lines = [], [], {"train": [], "test": []}
    for number, (video_id, label, colour, split) in enumerate(videos):
        if split == "train":   # every phrasing is a training caption (MSR-VTT: 20 per video)
            captions = [phrase.format(c=colour) for phrase in PHRASES[label]]
        else:                   # one caption per test video, the phrasing varying over the split
            captions = [PHRASES[label][number % len(PHRASES[label])].format(c=colour)]
            test_rows.append((f"ret{len(test_rows)}", f"msr{video_id[5:]}", video_id, captions[0]))
        sentences += [dict(caption=c, video_id=video_id, sen_id=len(sentences) + i) for i, c in enumerate(captions)]
        lines[split].append(json.dumps(dict(video=f"videos/{video_id}.mp4", captions=captions)))
    data_path.mkdir(exist_ok=True)
    atomic_write_text(paths["train_csv"], _csv_text(["video_id"], [(v,) for v, *_, s in videos if s == "train"]))
    atomic_write_text(paths["val_csv"], _csv_text(["key", "vid_key", "video_id", "sentence"], test_rows))
    atomic_write_json(paths["data_json"], dict(
        videos=[dict(video_id=v, category=label, url=f"toy://{v}", split=s) for v, label, _, s in videos],
        sentences=sentences), indent=None)
    for split in ("train", "test"):
        atomic_write_text(paths[f"{split}_jsonl"], "\n".join(lines[split]) + "\n")
    make_tiny_backbone(TINY_CLIP_CONFIG, paths["weights"])
    atomic_write_json(meta_file, meta)   # last: marks the dataset complete
    return dict(paths, generated=True, train_videos=len(train), test_videos=len(test))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_per_pair", type=int, default=2, help="training videos per (motion, colour)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--formats", default="frames,videos", help="comma-separated subset of frames,videos")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    info = generate_toy_retrieval(args.out, seed=args.seed, train_per_pair=args.train_per_pair, frames=args.frames,
                                  height=args.height, width=args.width,
                                  formats=[f.strip() for f in args.formats.split(",") if f.strip()],
                                  workers=args.workers)
    state = f"generated in {time.perf_counter() - start:.1f} s" if info["generated"] else "already complete, kept"
    print(f"toy retrieval dataset at {args.out} ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
