"""A toy dataset whose informative frames come in short bursts among distractor frames: a few sampled frames see
some of them (and miss whole bursts), every frame sees all.

    python -m side4video.data.toy_sparse --out DIR [--seed 0] [--train_per_class 200] [--val_per_class 25]
                                         [--min_frames 32] [--max_frames 48] [--height 64] [--width 80]
                                         [--formats frames[,videos]] [--workers N]
                                         [--bursts LO,HI] [--burst_length LO,HI]

In the spirit of Move4MNIST ("No frame left behind", Liu et al., CVPR'21), drawn with numpy (no download).
Four classes (``CLASS_NAMES``): a bright disc drifts slowly left / right / up / down. Each clip has its own
length (32-48 frames by default) and mixes four kinds of frames (``FRAME_TYPES``):

* ``informative``: the background with the moving disc — only 4 or 5 short bursts of 3-5 frames, one burst
  at a random place in each of 4-5 equal parts of the clip (about 45% of the frames, in bursts among the
  distractors);
* ``static``: the background with a different object (a dimmer square) that never moves;
* ``background``: the background alone;
* ``black``: an all-black frame.

``--bursts`` and ``--burst_length`` (inclusive ranges, defaults ``BURSTS`` and ``BURST_LENGTH``) set the
sparsity: e.g. ``--bursts 2,2`` leaves about 20% of the frames informative (issue 20's sweep). The defaults
give the documented dataset, byte for byte.

Non-informative frames come in runs of 1-4 frames of one kind. The disc's position is defined at every
time step, ``p(t) = p0 + v * t`` (it moves on a torus, wrapping around the frame edges, from a uniform
start), so the bursts show it at points of one trajectory (1.8-2.2 px per frame, wrapping around). Because
the start is uniform on the torus, the disc's position in any single frame is uniform whatever the class and
the frame's time: no single frame tells the class; the order of the informative frames does.

Every frame has faint independent (uniform) sensor noise, so consecutive background frames are not bit-identical.

Layout (the format of ``side4video.data.toy``): ``frames/{train,val}/<id>/00001.jpg ...``,
``train_frames.txt``/``val_frames.txt`` with ``<split>/<id> <num_frames> <label>`` lines, ``labels.csv``
(``id,name``), ``frame_types/{train,val}.npz`` (each clip's frame types, for analysis) and, with the
``videos`` format, ``videos/{train,val}/<id>.mp4`` + ``train_videos.txt``/``val_videos.txt``. Everything
derives from the seed (one generator per clip), byte-identical whatever the number of workers; a complete
dataset with the same arguments (``toy_sparse_meta.json``) is not generated again.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..backbones.tiny import TINY_CLIP_CONFIG, make_tiny_backbone
from .toy import run_tasks, write_label_list, write_split_lists, write_video

CLASS_NAMES = ("moving left", "moving right", "moving up", "moving down")
FLIP_PAIRS = ((0, 1),)
FRAME_TYPES = ("informative", "static", "background", "black")
INFORMATIVE, STATIC, BACKGROUND, BLACK = range(4)
IMAGE_TMPL = "{:05d}.jpg"
FORMATS = ("frames", "videos")
META_VERSION = 3

BURSTS = (4, 5)            # informative bursts per clip (inclusive range)
BURST_LENGTH = (3, 5)      # frames per burst (inclusive)
RUN_LENGTH = (1, 4)        # frames per run of one distractor kind (inclusive)
DISTRACTOR_P = (0.45, 0.35, 0.20)  # static object, background only, black
SPEED_PX = (1.8, 2.2)      # disc speed in px per frame (scaled to a 64 px short side): neighbouring bursts (about
#                            10 frames apart) are ~20 px apart, well under half the height, so the wrap-around
#                            rarely makes a displacement read as the opposite one
DISC_RADIUS = (5.0, 7.0)
SQUARE_SIDE = (9.0, 13.0)
NOISE_STD = 2.0
NOISE_SCALE = NOISE_STD * 3 ** 0.5 / 128  # uniform sensor noise from random bytes (as int8), std NOISE_STD
# direction (dx, dy) per class, y down
DIRECTIONS = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))


def _inclusive_range(value: Sequence[int], name: str, minimum: int = 1) -> tuple[int, int]:
    low, high = (int(v) for v in value)
    if not minimum <= low <= high:
        raise ValueError(f"{name} must be an inclusive range {minimum} <= LO <= HI, got {tuple(value)}")
    return low, high


def frame_schedule(rng: np.random.Generator, frames: int, bursts: Sequence[int] = BURSTS,
                   burst_length: Sequence[int] = BURST_LENGTH) -> np.ndarray:
    """Frame types ``[F]`` (``FRAME_TYPES`` indices): runs of distractors, then informative bursts on top.

    The clip is split into ``n`` equal parts (n drawn from ``bursts``, inclusive); each part gets one burst of
    ``burst_length`` frames (inclusive, cut to the part) at a uniform position inside it, so the bursts span the
    clip irregularly. The defaults (``BURSTS``, ``BURST_LENGTH``) draw the documented dataset's schedules.
    """
    bursts = _inclusive_range(bursts, "bursts")
    burst_length = _inclusive_range(burst_length, "burst_length")
    types = np.empty(frames, dtype=np.int64)
    t = 0
    while t < frames:
        kind = 1 + int(rng.choice(3, p=DISTRACTOR_P))
        run = int(rng.integers(RUN_LENGTH[0], RUN_LENGTH[1] + 1))
        types[t:t + run] = kind
        t += run
    count = int(rng.integers(bursts[0], bursts[1] + 1))
    edges = (np.arange(count + 1) * frames) // count
    for low, high in zip(edges[:-1], edges[1:]):
        length = min(int(rng.integers(burst_length[0], burst_length[1] + 1)), int(high - low))
        start = int(rng.integers(low, high - length + 1))
        types[start:start + length] = INFORMATIVE
    return types


def disc_path(rng: np.random.Generator, label: int, frames: int, height: int, width: int) -> np.ndarray:
    """Disc centre ``[F, 2]`` (x, y in px) at every time step: uniform start on the torus, constant drift."""
    short = min(height, width)
    start = rng.uniform((0.0, 0.0), (width, height))
    step = np.asarray(DIRECTIONS[label]) * rng.uniform(*SPEED_PX) * short / 64
    return (start + np.arange(frames)[:, None] * step) % (width, height)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dark colour with a smooth low-frequency texture, float ``[H, W, 3]`` (well below the objects)."""
    base = rng.uniform(25, 85, size=3)
    coarse = rng.normal(0, 1, size=(4, 5, 3)).astype(np.float32)
    smooth = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(coarse[..., c])).resize(
        (width, height), Image.BILINEAR)) for c in range(3)], axis=-1)
    return base + 8 * smooth


def _disc_alpha(x: float, y: float, radius: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage ``[H, W]`` of a disc centred at pixel coordinates (x, y), wrapped on the torus."""
    xs = np.arange(width) + 0.5 - x
    ys = np.arange(height) + 0.5 - y
    xs = (xs + width / 2) % width - width / 2
    ys = (ys + height / 2) % height - height / 2
    distance = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def _square_alpha(x: float, y: float, side: float, height: int, width: int) -> np.ndarray:
    """Anti-aliased coverage ``[H, W]`` of an axis-aligned square (not wrapped: kept inside the frame)."""
    half = side / 2
    cover_x = np.clip(np.minimum(np.arange(width) + 1, x + half) - np.maximum(np.arange(width), x - half), 0, 1)
    cover_y = np.clip(np.minimum(np.arange(height) + 1, y + half) - np.maximum(np.arange(height), y - half), 0, 1)
    return cover_y[:, None] * cover_x[None, :]


def render_clip(rng: np.random.Generator, label: int, frames: int = 40, height: int = 64, width: int = 80, *,
                bursts: Sequence[int] = BURSTS, burst_length: Sequence[int] = BURST_LENGTH
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One clip of class ``label``: (uint8 frames ``[F, H, W, 3]``, frame types ``[F]``, disc centres ``[F, 2]``).

    The draws that do not depend on the class (schedule, background, colours, sizes, the distractor) come
    first and in a fixed order, so two clips from equal generators differ only in the drift direction.
    ``bursts`` and ``burst_length``: the sparsity, see :func:`frame_schedule`.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label must be in [0, {len(CLASS_NAMES)}), got {label}")
    types = frame_schedule(rng, frames, bursts, burst_length)
    background = _background(rng, height, width)
    disc_colour = rng.uniform(170, 255, size=3)
    square_colour = rng.uniform(100, 150, size=3)   # dimmer than the disc: a distractor, not a second disc
    radius = rng.uniform(*DISC_RADIUS) * min(height, width) / 64
    side = rng.uniform(*SQUARE_SIDE) * min(height, width) / 64
    square_at = rng.uniform((side / 2, side / 2), (width - side / 2, height - side / 2))
    square = _square_alpha(square_at[0], square_at[1], side, height, width)[..., None].astype(np.float32)
    noise = np.frombuffer(rng.bytes(frames * height * width * 3), dtype=np.int8).reshape(frames, height, width, 3)
    path = disc_path(rng, label, frames, height, width)

    images = noise.astype(np.float32)
    images *= NOISE_SCALE
    images += background.astype(np.float32)
    for t in np.flatnonzero(types == INFORMATIVE):
        alpha = _disc_alpha(path[t, 0], path[t, 1], radius, height, width)[..., None].astype(np.float32)
        images[t] = images[t] * (1 - alpha) + disc_colour.astype(np.float32) * alpha
    static = types == STATIC
    images[static] = images[static] * (1 - square) + square_colour.astype(np.float32) * square
    images[types == BLACK] = 0.0
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), types, path


def _write_frames(directory: str, frames: np.ndarray, quality: int = 90) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(os.path.join(directory, IMAGE_TMPL.format(i)), quality=quality)


def clip_length(seed: int, split: str, number: int, min_frames: int, max_frames: int) -> int:
    """A clip's frame count, uniform in ``[min_frames, max_frames]`` (its own generator, before rendering)."""
    return int(np.random.default_rng([seed, _split_id(split), number, 1]).integers(min_frames, max_frames + 1))


def _split_id(split: str) -> int:
    return 0 if split == "train" else 1


def _generate_clip(task: tuple) -> tuple[str, int, np.ndarray]:
    out_dir, split, number, label, seed, frames, height, width, formats, bursts, burst_length = task
    rng = np.random.default_rng([seed, _split_id(split), number])
    clip, types, _ = render_clip(rng, label, frames, height, width, bursts=bursts, burst_length=burst_length)
    video_id = f"{number:05d}"
    if "frames" in formats:
        _write_frames(os.path.join(out_dir, "frames", split, video_id), clip)
    if "videos" in formats:
        write_video(os.path.join(out_dir, "videos", split, f"{video_id}.mp4"), clip)
    return split, number, types


def _split_labels(seed: int, split: str, per_class: int) -> np.ndarray:
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    return np.random.default_rng([seed, _split_id(split), 2 ** 31]).permutation(labels)


def _readme(meta: dict, stats: dict) -> str:
    bursts, length = meta.get("bursts", BURSTS), meta.get("burst_length", BURST_LENGTH)
    spans = f"{bursts[0]}-{bursts[1]} short bursts of {length[0]}-{length[1]} informative frames"
    classes = "\n".join(f"  {i}  {name}" for i, name in enumerate(CLASS_NAMES))
    fractions = ", ".join(f"{name} {stats['fractions'][name]:.1%}" for name in FRAME_TYPES)
    return f"""Side4Video sparse toy dataset (generated by `python -m side4video.data.toy_sparse`)

{meta['train_per_class']} training and {meta['val_per_class']} validation clips per class, {meta['min_frames']}-
{meta['max_frames']} frames of {meta['width']}x{meta['height']} pixels each, seed {meta['seed']}.

Classes (labels.csv):
{classes}

A bright disc drifts slowly (wrapping around the edges) in the class direction, but it is visible only in
{spans}; the other frames show a static square, the background alone, or
black. Frame types over all clips: {fractions}.
8 frames sampled TSN-style (segment middles) miss {stats['uniform_burst_miss']:.1%} of the informative bursts
entirely (and catch fewer than 2 informative frames in {stats['uniform_miss']:.1%} of the clips).
Horizontal flips swap left and right: flip_pairs: [[0, 1]].

Layout:
  frames/{{train,val}}/<id>/00001.jpg ...   JPEG frames, 1-indexed (image_tmpl '{{:05d}}.jpg')
  train_frames.txt, val_frames.txt         '<split>/<id> <num_frames> <label>', relative to frames/
  labels.csv                               'id,name'
  frame_types/{{train,val}}.npz              per clip id: frame types (0 informative, 1 static, 2 background, 3 black)
"""


def informative_bursts(clip_types: np.ndarray) -> list[tuple[int, int]]:
    """The runs of informative frames of one clip, ``[(start, end), ...]`` (end exclusive)."""
    informative = np.concatenate([[False], clip_types == INFORMATIVE, [False]])
    edges = np.flatnonzero(informative[1:] != informative[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def schedule_stats(types: Sequence[np.ndarray], num_segments: int = 8) -> dict:
    """Fractions of each frame type and what TSN segment-middle sampling of ``num_segments`` frames sees: how often
    it catches fewer than two informative frames (``uniform_miss``) and the fraction of the informative bursts
    it misses entirely (``uniform_burst_miss``: each missed burst is a gap in the drift it can follow)."""
    every = np.concatenate(list(types))
    fractions = {name: float(np.mean(every == i)) for i, name in enumerate(FRAME_TYPES)}
    misses, bursts, missed_bursts = [], 0, 0
    for clip in types:
        tick = len(clip) / num_segments
        picks = (tick / 2 + tick * np.arange(num_segments)).astype(np.int64)
        misses.append(int(np.sum(clip[picks] == INFORMATIVE)) < 2)
        for start, end in informative_bursts(clip):
            bursts += 1
            missed_bursts += not np.any((picks >= start) & (picks < end))
    return dict(fractions=fractions, uniform_miss=float(np.mean(misses)),
                uniform_burst_miss=missed_bursts / max(bursts, 1))


def generate_toy_sparse_dataset(out_dir: str, *, seed: int = 0, train_per_class: int = 200, val_per_class: int = 25,
                                min_frames: int = 32, max_frames: int = 48, height: int = 64, width: int = 80,
                                formats: Sequence[str] = ("frames",), workers: int | None = None,
                                bursts: Sequence[int] = BURSTS, burst_length: Sequence[int] = BURST_LENGTH) -> dict:
    """Write the sparse toy dataset to ``out_dir`` (skipped if already complete with these arguments).

    ``bursts`` / ``burst_length`` (inclusive ranges, :func:`frame_schedule`) set the sparsity; they are recorded
    in ``toy_sparse_meta.json`` only when they differ from the defaults, so the documented dataset (and its meta
    file) stays byte-identical and is not generated again.

    Returns ``root``, ``frames_root``, ``train_frames_list``, ``val_frames_list`` (with the ``frames`` format),
    the video paths (with the ``videos`` format), ``frame_types``, ``label_list``, ``image_tmpl``, ``num_classes``,
    ``class_names``, ``flip_pairs``,
    ``stats`` (:func:`schedule_stats` over both splits) and ``generated`` (False when skipped).
    """
    formats = tuple(sorted(set(formats)))
    if not formats or not set(formats) <= set(FORMATS):
        raise ValueError(f"formats must be a subset of {FORMATS}, got {formats}")
    if "videos" in formats and (height % 2 or width % 2):
        raise ValueError("yuv420p video needs an even height and width")
    bursts = _inclusive_range(bursts, "bursts")
    burst_length = _inclusive_range(burst_length, "burst_length")
    minimum = 2 * bursts[1]
    if not minimum <= min_frames <= max_frames:
        raise ValueError(f"need {minimum} <= min_frames <= max_frames, got {min_frames}, {max_frames}")
    meta = dict(version=META_VERSION, seed=seed, train_per_class=train_per_class, val_per_class=val_per_class,
                min_frames=min_frames, max_frames=max_frames, height=height, width=width, formats=list(formats))
    if bursts != BURSTS:
        meta["bursts"] = list(bursts)
    if burst_length != BURST_LENGTH:
        meta["burst_length"] = list(burst_length)
    paths = dict(root=out_dir, label_list=os.path.join(out_dir, "labels.csv"), image_tmpl=IMAGE_TMPL,
                 num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES),
                 flip_pairs=[list(pair) for pair in FLIP_PAIRS], frame_types=os.path.join(out_dir, "frame_types"))
    # the lists of the formats written only (a frame list names folders that exist)
    if "frames" in formats:
        paths.update(frames_root=os.path.join(out_dir, "frames"),
                     train_frames_list=os.path.join(out_dir, "train_frames.txt"),
                     val_frames_list=os.path.join(out_dir, "val_frames.txt"))
    if "videos" in formats:
        paths.update(videos_root=os.path.join(out_dir, "videos"),
                     train_videos_list=os.path.join(out_dir, "train_videos.txt"),
                     val_videos_list=os.path.join(out_dir, "val_videos.txt"))
    meta_file = os.path.join(out_dir, "toy_sparse_meta.json")
    if os.path.isfile(meta_file):
        with open(meta_file, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved.get("arguments") == meta:
            return dict(paths, stats=saved.get("stats"), generated=False)
        os.remove(meta_file)  # different arguments: incomplete until rewritten

    os.makedirs(out_dir, exist_ok=True)
    splits = {"train": _split_labels(seed, "train", train_per_class), "val": _split_labels(seed, "val", val_per_class)}
    lengths = {split: [clip_length(seed, split, n, min_frames, max_frames) for n in range(1, len(labels) + 1)]
               for split, labels in splits.items()}
    tasks = [(out_dir, split, number, int(label), seed, lengths[split][number - 1], height, width, formats, bursts,
              burst_length)
             for split, labels in splits.items() for number, label in enumerate(labels, start=1)]
    results = run_tasks(_generate_clip, tasks, workers)
    schedules = {(split, number): types for split, number, types in results}

    os.makedirs(paths["frame_types"], exist_ok=True)
    for split, labels in splits.items():
        write_split_lists(paths, split, lengths[split], labels, formats)
        np.savez(os.path.join(paths["frame_types"], f"{split}.npz"),
                 **{f"{n:05d}": schedules[(split, n)].astype(np.int8) for n in range(1, len(labels) + 1)})
    write_label_list(paths["label_list"], CLASS_NAMES)
    stats = schedule_stats([schedules[key] for key in sorted(schedules)])
    with open(os.path.join(out_dir, "README.txt"), "w", encoding="utf-8") as handle:
        handle.write(_readme(meta, stats))
    with open(meta_file, "w", encoding="utf-8") as handle:  # written last: marks the dataset complete
        json.dump(dict(arguments=meta, stats=stats), handle, indent=1)
    return dict(paths, stats=stats, generated=True)


def _range_argument(text: str) -> tuple[int, int]:
    """``LO,HI`` (or a single ``N`` for ``N,N``) → an inclusive range of positive integers."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (integers), got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or not 1 <= values[0] <= values[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 1 <= LO <= HI, got {text!r}")
    return values[0], values[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_per_class", type=int, default=200)
    parser.add_argument("--val_per_class", type=int, default=25)
    parser.add_argument("--min_frames", type=int, default=32)
    parser.add_argument("--max_frames", type=int, default=48)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--formats", default="frames", help="comma-separated subset of frames,videos")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--bursts", type=_range_argument, default=BURSTS, metavar="LO,HI",
                        help="informative bursts per clip, inclusive (default: %(default)s)")
    parser.add_argument("--burst_length", type=_range_argument, default=BURST_LENGTH, metavar="LO,HI",
                        help="frames per informative burst, inclusive (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    weights = make_tiny_backbone(TINY_CLIP_CONFIG, Path(args.out) / "tiny_clip.safetensors")
    print(f"tiny frozen backbone (random weights, for the toy configs): {weights}")
    info = generate_toy_sparse_dataset(
        args.out, seed=args.seed, train_per_class=args.train_per_class, val_per_class=args.val_per_class,
        min_frames=args.min_frames, max_frames=args.max_frames, height=args.height, width=args.width,
        formats=[f.strip() for f in args.formats.split(",") if f.strip()], workers=args.workers,
        bursts=args.bursts, burst_length=args.burst_length)
    state = f"generated in {time.perf_counter() - start:.1f} s" if info["generated"] else "already complete, kept"
    classes = info["num_classes"]
    print(f"sparse toy dataset at {args.out} ({state}): {classes} classes, {args.train_per_class * classes} train / "
          f"{args.val_per_class * classes} val clips of {args.min_frames}-{args.max_frames} frames, "
          f"{args.width}x{args.height}")
    stats = info.get("stats") or {}
    if stats:
        print("  frame types: " + ", ".join(f"{k} {v:.1%}" for k, v in stats["fractions"].items())
              + f"; 8 uniform frames miss {stats['uniform_burst_miss']:.1%} of the informative bursts")
    for key in ("train_frames_list", "val_frames_list", "train_videos_list", "val_videos_list", "label_list"):
        if key in info:
            print(f"  {key}: {info[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
