"""A small synthetic action dataset that only temporal models can solve.

    python -m side4video.data.toy --out DIR [--seed 0] [--train_per_class 120] [--val_per_class 25]
                                  [--frames 24] [--height 64] [--width 80] [--formats frames,videos]

Eight classes (see ``CLASS_NAMES``): one object moves right/left/down/up, rotates clockwise/
counter-clockwise, grows or shrinks. Exactly one attribute of the object (position, angle or size)
changes per video; the others stay at uniformly drawn values. Moving attributes wrap around
(position on a torus, angle modulo 360, size as a sawtooth between its bounds) from a uniform
start, so in every class each single frame has the same distribution of position, angle, size and
colours: only the order of frames tells the class apart.

The object is an "F": no rotational symmetry, so rotation is visible. It is drawn mirrored in half
of the videos, which makes a horizontally flipped video an exact sample of the dataset with
right<->left and clockwise<->counter-clockwise swapped: ``flip_pairs: [[0, 1], [4, 5]]``.

Everything derives from the seed (one generator per video), so the output is byte-identical for
the same arguments whatever the number of worker processes. A complete dataset with the same
arguments (recorded in ``toy_meta.json``) is not generated again.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..backbones.tiny import TINY_CLIP_CONFIG, make_tiny_backbone

CLASS_NAMES = ("moving right", "moving left", "moving down", "moving up",
               "rotating clockwise", "rotating counter-clockwise", "growing", "shrinking")
FLIP_PAIRS = ((0, 1), (4, 5))
IMAGE_TMPL = "{:05d}.jpg"
FORMATS = ("frames", "videos")
META_VERSION = 2
SUPERSAMPLING = 4  # the object is drawn at 4x resolution and box-filtered down (anti-aliasing)

# Motion ranges, per frame; sizes and translation scale with the frame (tuned for 64 x 80).
TRANSLATION_PX = (2.0, 3.0)
ROTATION_DEG = (10.0, 14.0)
SIZE_RANGE = (0.2, 0.5)  # object height as a fraction of the frame's short side
SIZE_SWEEP = (0.6, 0.95)  # fraction of the size range crossed over a whole video: at most one wrap


def _centred(points: Sequence[tuple[float, float]]) -> np.ndarray:
    """Polygon vertices shifted so that the area centroid is the origin (rotation and position refer to it)."""
    p = np.asarray(points, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    centroid = np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)
    return p - centroid


# An "F", height 1 (x to the right, y down).
F_SHAPE = _centred([(0, 0), (0.75, 0), (0.75, 0.2), (0.3, 0.2), (0.3, 0.42), (0.6, 0.42),
                    (0.6, 0.62), (0.3, 0.62), (0.3, 1.0), (0, 1.0)])


def _background(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark random colour with a smooth low-frequency texture and faint grain; returns (image, base colour).

    Backgrounds are always darker than objects: with a fixed contrast sign, motion is learnable from a few
    hundred clips on a CPU (with arbitrary colours even a 3D CNN needs far more data).
    """
    base = rng.uniform(30, 100, size=3)
    coarse = rng.normal(0, 1, size=(4, 5, 3)).astype(np.float32)
    smooth = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(coarse[..., c])).resize((width, height),
                                                                                               Image.BILINEAR))
                       for c in range(3)], axis=-1)
    image = base + 10 * smooth + rng.normal(0, 3, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.float32), base


def _object_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A bright colour (every channel well above any background)."""
    return rng.uniform(180, 255, size=3)


def sample_trajectory(rng: np.random.Generator, label: int, frames: int, height: int,
                      width: int) -> dict[str, np.ndarray]:
    """Per-frame centre x/y (px), angle (degrees, clockwise on screen) and object height (px).

    Each attribute starts uniform over its range; the class's attribute then moves at a random
    constant speed and wraps around, so its marginal per frame stays uniform.
    """
    t = np.arange(frames, dtype=np.float64)
    short = min(height, width)
    size_min, size_max = SIZE_RANGE[0] * short, SIZE_RANGE[1] * short
    x = np.full(frames, rng.uniform(0, width))
    y = np.full(frames, rng.uniform(0, height))
    angle = np.full(frames, rng.uniform(0, 360))
    size_phase = np.full(frames, rng.uniform(0, 1))
    direction = 1.0 if label % 2 == 0 else -1.0  # right, down, clockwise, growing are the even classes
    if label in (0, 1):
        x = (x + direction * rng.uniform(*TRANSLATION_PX) * short / 64 * t) % width
    elif label in (2, 3):
        y = (y + direction * rng.uniform(*TRANSLATION_PX) * short / 64 * t) % height
    elif label in (4, 5):
        angle = (angle + direction * rng.uniform(*ROTATION_DEG) * t) % 360
    else:
        size_phase = (size_phase + direction * rng.uniform(*SIZE_SWEEP) / max(frames - 1, 1) * t) % 1.0
    return dict(x=x, y=y, angle=angle, size=size_min + size_phase * (size_max - size_min))


def _object_alpha(shape: np.ndarray, x: float, y: float, angle: float, size: float,
                  height: int, width: int) -> np.ndarray:
    """Coverage in [0, 1] of the object, wrapped around the frame edges (a torus)."""
    s = SUPERSAMPLING
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])  # clockwise for y down
    points = (shape * size) @ rotation.T + (x, y)
    canvas = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(canvas)
    for dx in (-width, 0, width):
        for dy in (-height, 0, height):
            shifted = points + (dx, dy)
            if (shifted[:, 0].max() < 0 or shifted[:, 0].min() > width
                    or shifted[:, 1].max() < 0 or shifted[:, 1].min() > height):
                continue
            draw.polygon([tuple(p) for p in shifted * s], fill=255)
    return np.asarray(canvas.resize((width, height), Image.BOX), dtype=np.float32) / 255


def render_clip(rng: np.random.Generator, label: int, frames: int = 24, height: int = 64,
                width: int = 80, *, colour: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One video of class ``label``: (uint8 frames ``[F, H, W, 3]``, object coverage ``[F, H, W]``).

    ``colour``: the object's RGB (the retrieval toy names it in the caption); None draws a bright one. The draw
    happens either way, so the rest of the clip is the same for the same generator."""
    background, base = _background(rng, height, width)
    drawn = _object_colour(rng, base)
    colour = drawn if colour is None else np.asarray(colour, dtype=np.float64)
    shape = F_SHAPE * (-1, 1) if rng.random() < 0.5 else F_SHAPE  # mirrored in half of the videos
    path = sample_trajectory(rng, label, frames, height, width)
    alphas = np.stack([_object_alpha(shape, path["x"][i], path["y"][i], path["angle"][i], path["size"][i],
                                     height, width) for i in range(frames)])
    images = background * (1 - alphas[..., None]) + colour * alphas[..., None]
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), alphas


def write_frame_folder(directory: str, frames: np.ndarray, image_tmpl: str = IMAGE_TMPL, quality: int = 90) -> None:
    """Frames ``[F, H, W, 3]`` as 1-indexed JPEG files."""
    os.makedirs(directory, exist_ok=True)
    for i, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(os.path.join(directory, image_tmpl.format(i)), quality=quality)


def write_video(path: str, frames: np.ndarray, fps: int = 24, codec: str = "mpeg4") -> None:
    """Frames ``[F, H, W, 3]`` (even H and W) as an mp4 in yuv420p.

    The default is FFmpeg's own MPEG-4 part 2 encoder at about 8 bits per pixel (near-lossless at these
    sizes) because its output is byte-reproducible; libx264 (``codec="libx264"``) occasionally was not,
    even single-threaded, which would break the dataset's determinism.
    """
    import av  # deferred: a decoder, loaded only for video files

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "threads": "1"}
        else:
            stream.bit_rate = 8 * stream.width * stream.height * fps
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _generate_video(task: tuple) -> None:
    out_dir, split, number, label, seed, frames, height, width, formats = task
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, number])
    clip, _ = render_clip(rng, label, frames, height, width)
    video_id = f"{number:05d}"
    if "frames" in formats:
        write_frame_folder(os.path.join(out_dir, "frames", split, video_id), clip)
    if "videos" in formats:
        write_video(os.path.join(out_dir, "videos", split, f"{video_id}.mp4"), clip)


def _check_decord_reads(path: str, frames: int) -> None:
    """Fail early if decord, the default training decoder, cannot read the videos back."""
    try:
        import decord  # deferred: an optional decoder
    except ImportError:
        return
    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        reader.get_batch(list(range(count))).asnumpy()
    except Exception as error:
        raise RuntimeError(f"decord cannot read the generated {path} ({str(error).splitlines()[0][:120]}); "
                           f"decord 0.6 fails on some small widths (16, 24, 48, 72): choose another --width") from None
    if count != frames:
        raise RuntimeError(f"decord reads {count} frames from {path}, {frames} were written")


def _split_labels(seed: int, split: str, per_class: int) -> np.ndarray:
    """Balanced labels in a seeded order, so lists are not sorted by class."""
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    return np.random.default_rng([seed, 0 if split == "train" else 1, 2 ** 31]).permutation(labels)


def _paths(out_dir: str, formats: Sequence[str]) -> dict:
    paths = dict(root=out_dir, label_list=os.path.join(out_dir, "labels.csv"), image_tmpl=IMAGE_TMPL,
                 num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES),
                 flip_pairs=[list(pair) for pair in FLIP_PAIRS])
    if "frames" in formats:
        paths.update(frames_root=os.path.join(out_dir, "frames"),
                     train_frames_list=os.path.join(out_dir, "train_frames.txt"),
                     val_frames_list=os.path.join(out_dir, "val_frames.txt"))
    if "videos" in formats:
        paths.update(videos_root=os.path.join(out_dir, "videos"),
                     train_videos_list=os.path.join(out_dir, "train_videos.txt"),
                     val_videos_list=os.path.join(out_dir, "val_videos.txt"))
    return paths


def _readme(meta: dict) -> str:
    classes = "\n".join(f"  {i}  {name}" for i, name in enumerate(CLASS_NAMES))
    return f"""Side4Video toy dataset (generated by `python -m side4video.data.toy`)

{meta['train_per_class']} training and {meta['val_per_class']} validation videos per class,
{meta['frames']} frames of {meta['width']}x{meta['height']} pixels each, seed {meta['seed']}.

Classes (labels.csv):
{classes}

Each video shows one "F"-shaped object (mirrored in half of the videos) on a static textured
background. Exactly one attribute changes over time: the position (moving classes, wrapping
around the frame edges), the angle (rotating classes) or the size (growing/shrinking, wrapping
at most once from the largest back to the smallest size or the reverse). Start values are
uniform, so any single frame looks the same in distribution for every class: a model has to
compare frames in order to tell the classes apart.

A horizontally flipped video is a valid video of the mirrored class: moving right <-> moving
left and rotating clockwise <-> counter-clockwise. Use `flip: True` with
`flip_pairs: [[0, 1], [4, 5]]`.

Layout:
  frames/{{train,val}}/<id>/00001.jpg ...   JPEG frames, 1-indexed (image_tmpl '{{:05d}}.jpg')
  videos/{{train,val}}/<id>.mp4              the same videos as MPEG-4 part 2 mp4 (yuv420p)
  train_frames.txt, val_frames.txt         '<split>/<id> <num_frames> <label>', relative to frames/
  train_videos.txt, val_videos.txt         '<split>/<id>.mp4 <label>', relative to videos/
  labels.csv                               'id,name'
"""


def run_tasks(function: Callable[[tuple], Any], tasks: list[tuple], workers: int | None) -> list:
    """``function`` over ``tasks``, in order; in forked worker processes when there are many (the workers only need
    numpy/PIL/av, so fork skips re-importing the package and torch). ``workers`` None: the CPU count, at most 8."""
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers > 1 and len(tasks) > 16:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with context.Pool(workers) as pool:
            return list(pool.imap(function, tasks, chunksize=8))
    return [function(task) for task in tasks]


def write_split_lists(paths: dict, split: str, frame_counts: Sequence[int], labels: Sequence[int],
                      formats: Sequence[str]) -> None:
    """The TSN-style lists of one split: ``<split>/<id> <frames> <label>`` for frame folders, ``<split>/<id>.mp4
    <label>`` for videos (ids 00001, 00002 ... in the order of ``labels``)."""
    ids = [f"{split}/{number:05d}" for number in range(1, len(labels) + 1)]
    if "frames" in formats:
        with open(paths[f"{split}_frames_list"], "w", encoding="utf-8") as handle:
            handle.writelines(f"{vid} {n} {label}\n" for vid, n, label in zip(ids, frame_counts, labels))
    if "videos" in formats:
        with open(paths[f"{split}_videos_list"], "w", encoding="utf-8") as handle:
            handle.writelines(f"{vid}.mp4 {label}\n" for vid, label in zip(ids, labels))


def write_label_list(path: str, class_names: Sequence[str]) -> None:
    """``id,name`` CSV, one row per class."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(class_names)))


def generate_toy_dataset(out_dir: str, *, seed: int = 0, train_per_class: int = 120, val_per_class: int = 25,
                         frames: int = 24, height: int = 64, width: int = 80,
                         formats: Sequence[str] = FORMATS, workers: int | None = None) -> dict:
    """Write the toy dataset to ``out_dir`` (skipped if already complete with these arguments).

    Returns the paths of roots and lists (``frames_root``, ``train_frames_list``, ``videos_root``,
    ``train_videos_list``, ... for the formats written), ``label_list``, ``image_tmpl``,
    ``num_classes``, ``class_names``, ``flip_pairs`` and ``generated`` (False when skipped).
    """
    formats = tuple(sorted(set(formats)))
    if not formats or not set(formats) <= set(FORMATS):
        raise ValueError(f"formats must be a subset of {FORMATS}, got {formats}")
    if "videos" in formats and (height % 2 or width % 2):
        raise ValueError("yuv420p video needs an even height and width")
    if frames < 2:
        raise ValueError("a toy video needs at least 2 frames")
    meta = dict(version=META_VERSION, seed=seed, train_per_class=train_per_class, val_per_class=val_per_class,
                frames=frames, height=height, width=width, formats=list(formats))
    paths = _paths(out_dir, formats)
    meta_file = os.path.join(out_dir, "toy_meta.json")
    if os.path.isfile(meta_file):
        with open(meta_file, encoding="utf-8") as handle:
            if json.load(handle) == meta:
                return dict(paths, generated=False)
        os.remove(meta_file)  # different arguments: the dataset is incomplete until rewritten

    os.makedirs(out_dir, exist_ok=True)
    splits = {"train": _split_labels(seed, "train", train_per_class), "val": _split_labels(seed, "val", val_per_class)}
    tasks = [(out_dir, split, number, int(label), seed, frames, height, width, formats)
             for split, labels in splits.items() for number, label in enumerate(labels, start=1)]
    run_tasks(_generate_video, tasks, workers)

    if "videos" in formats:
        _check_decord_reads(os.path.join(out_dir, "videos", "train", "00001.mp4"), frames)

    for split, labels in splits.items():
        write_split_lists(paths, split, [frames] * len(labels), labels, formats)
    write_label_list(paths["label_list"], CLASS_NAMES)
    with open(os.path.join(out_dir, "README.txt"), "w", encoding="utf-8") as handle:
        handle.write(_readme(meta))
    with open(meta_file, "w", encoding="utf-8") as handle:  # written last: marks the dataset complete
        json.dump(meta, handle, indent=1)
    return dict(paths, generated=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_per_class", type=int, default=120)
    parser.add_argument("--val_per_class", type=int, default=25)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--formats", default="frames,videos", help="comma-separated subset of frames,videos")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--no_backbone", action="store_true",
                        help="do not write the tiny random backbone the toy configs use (tiny_clip.safetensors)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if not args.no_backbone:
        weights = make_tiny_backbone(TINY_CLIP_CONFIG, os.path.join(args.out, "tiny_clip.safetensors"))
        print(f"tiny frozen backbone (random weights, for the toy configs): {weights}")
    info = generate_toy_dataset(args.out, seed=args.seed, train_per_class=args.train_per_class,
                                val_per_class=args.val_per_class, frames=args.frames, height=args.height,
                                width=args.width, formats=[f.strip() for f in args.formats.split(",") if f.strip()],
                                workers=args.workers)
    num_classes = info["num_classes"]
    state = f"generated in {time.perf_counter() - start:.1f} s" if info["generated"] else "already complete, kept"
    print(f"toy dataset at {args.out} ({state}): {num_classes} classes, "
          f"{args.train_per_class * num_classes} train / {args.val_per_class * num_classes} val videos of "
          f"{args.frames} frames, {args.width}x{args.height}")
    for key in ("train_frames_list", "val_frames_list", "train_videos_list", "val_videos_list", "label_list"):
        if key in info:
            print(f"  {key}: {info[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
