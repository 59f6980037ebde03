"""Decode + augment throughput of the training data pipeline, in clips per second.

    python benchmarks/bench_loader.py [--workers N] [--seconds S] [--repeats R] [--frames 8,16]
                                      [--sources jpeg,decord,pyav,torchcodec]

Synthetic 320x256 videos of 64 frames (a drifting texture with moving blocks, so codecs and JPEG
have realistic work) are written to a temporary directory as JPEG frame folders and H.264 mp4
files. Each configuration builds the training dataset (input 224, short side 256, random resized
crop, flip; with and without RandAugment) and measures clips/s with the loading done in the main
process (``num_workers=0``, one thread) and with N DataLoader workers; with ``--repeats R`` each
number is the best of R measurements (less sensitive to other jobs on a shared machine). Prints a
markdown table.
torchcodec rows need the system's FFmpeg libraries; without them they are skipped with the reason.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch

# run from a checkout without installing the package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from side4video.config import config_section  # noqa: E402
from side4video.data import TrainSampler, create_dataset, create_loader  # noqa: E402
from side4video.data.decoders import torchcodec_available  # noqa: E402
from side4video.data.toy import write_frame_folder, write_video  # noqa: E402

HEIGHT, WIDTH, NUM_FRAMES, NUM_VIDEOS = 256, 320, 64, 8
IMAGE_TMPL = "img_{:05d}.jpg"


def synthetic_video(seed: int) -> np.ndarray:
    """[F, H, W, 3] uint8: a smooth random texture drifting right, with blocks moving across it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(HEIGHT // 16 + 1, WIDTH // 16 + 1, 3))
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=16,
                                              mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    texture = texture + rng.normal(0, 6, texture.shape)
    frames = np.empty((NUM_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(NUM_FRAMES):
        frame = np.roll(texture, 2 * t, axis=1)[:HEIGHT, :WIDTH].copy()
        for block in range(3):
            top, left = (40 + 70 * block + 2 * t) % (HEIGHT - 40), (30 + 90 * block + 5 * t) % (WIDTH - 40)
            frame[top:top + 40, left:left + 40] = 60 + 60 * block
        frames[t] = np.clip(frame, 0, 255)
    return frames


def write_data(root: str) -> dict[str, tuple[str, str]]:
    """(root, list file) per source."""
    frames_root, videos_root = os.path.join(root, "frames"), os.path.join(root, "videos")
    frame_lines, video_lines = [], []
    for i in range(NUM_VIDEOS):
        clip = synthetic_video(i)
        write_frame_folder(os.path.join(frames_root, f"v{i}"), clip, image_tmpl=IMAGE_TMPL, quality=90)
        write_video(os.path.join(videos_root, f"v{i}.mp4"), clip, codec="libx264")
        frame_lines.append(f"v{i} {NUM_FRAMES} {i % 4}\n")
        video_lines.append(f"v{i}.mp4 {i % 4}\n")
    for name, lines in (("frames.txt", frame_lines), ("videos.txt", video_lines)):
        with open(os.path.join(root, name), "w") as handle:
            handle.writelines(lines)
    return {"jpeg": (frames_root, os.path.join(root, "frames.txt")),
            "decord": (videos_root, os.path.join(root, "videos.txt")),
            "pyav": (videos_root, os.path.join(root, "videos.txt")),
            "torchcodec": (videos_root, os.path.join(root, "videos.txt"))}


def clips_per_second(dataset, workers: int, seconds: float, batch_size: int = 4) -> float:
    """Steady-state rate: the first batch (worker start-up, warm caches) is not timed."""
    sampler = TrainSampler(len(dataset) * 1000, seed=0)  # indices beyond len wrap below
    loader = create_loader(_Cycle(dataset), batch_size=batch_size, sampler=sampler, num_workers=workers,
                          persistent_workers=False, prefetch_factor=4 if workers else None)
    iterator = iter(loader)
    next(iterator)
    clips, start = 0, time.perf_counter()
    for batch in iterator:
        clips += batch["num_samples"]
        if time.perf_counter() - start > seconds:
            break
    return clips / (time.perf_counter() - start)


class _Cycle(torch.utils.data.Dataset):
    """The dataset repeated, so that a short list yields batches for as long as we time."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.split = dataset.split

    def __len__(self) -> int:
        return len(self.dataset) * 1000

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--seconds", type=float, default=2.5, help="timed seconds per measurement")
    parser.add_argument("--repeats", type=int, default=1, help="report the best of this many measurements")
    parser.add_argument("--frames", default="8,16", help="clip lengths T")
    parser.add_argument("--sources", default="jpeg,decord,pyav,torchcodec")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the in-process column is one core, like one DataLoader worker

    frame_counts = [int(t) for t in args.frames.split(",")]
    sources = args.sources.split(",")
    skipped = []
    if "torchcodec" in sources:
        ok, reason = torchcodec_available()
        if not ok:
            sources.remove("torchcodec")
            skipped.append(f"torchcodec rows skipped: {reason}")
    print(f"# data loader throughput (clips/s): {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.workers} workers")
    print(f"synthetic {WIDTH}x{HEIGHT} videos of {NUM_FRAMES} frames; train augmentation to 224x224; "
          f"batch 4; {args.seconds:.1f} s per measurement, best of {args.repeats}")
    if "torchcodec" in sources:
        print(f"torchcodec: {torchcodec_available()[1]}")
    for line in skipped:
        print(line)
    print()
    print(f"| source | frames | RandAugment | 1 process | {args.workers} workers | speed-up |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        data = write_data(root)
        for source, num_frames, rand_aug in itertools.product(sources, frame_counts, (False, True)):
            data_root, list_file = data[source]
            cfg = config_section("data", dict(dataset="bench", num_classes=4, num_segments=num_frames,
                                              input_size=224, train_root=data_root, train_list=list_file,
                                              image_tmpl=IMAGE_TMPL, rand_aug=rand_aug,
                                              video_backend="decord" if source == "jpeg" else source))
            dataset = create_dataset(cfg, "train", seed=0)
            single = max(clips_per_second(dataset, 0, args.seconds) for _ in range(args.repeats))
            parallel = max(clips_per_second(dataset, args.workers, args.seconds) for _ in range(args.repeats))
            label = {"jpeg": "JPEG frames (PIL)", "decord": "mp4 (decord)", "pyav": "mp4 (PyAV)",
                     "torchcodec": "mp4 (torchcodec)"}[source]
            print(f"| {label} | {num_frames}x224 | {'yes' if rand_aug else 'no'} | {single:.1f} | {parallel:.1f} | "
                  f"{parallel / single:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
