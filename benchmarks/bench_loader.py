"""What the training data path costs the host, per source and per augmentation placement, in one run.

    python benchmarks/bench_loader.py [--sources jpeg,decord,pyav,torchcodec,shards,pyav_1080p,decord_1080p]
                                      [--clips 24] [--batch 32] [--frames 8] [--repeats 3] [--workers 2]
                                      [--backbone ViT-B-16] [--json OUT]

Synthetic videos of 64 frames (a drifting texture with moving blocks, so codecs and JPEG have realistic work) are
written to a temporary directory: 340x256 JPEG frame folders (as Something-Something's extracted frames), the same
as H.264 mp4, as WebDataset shards of the frame folders, and 1920x1080 H.264 mp4 (decoded at the scaled size by
the device placement). Each row builds the training set of a Something-Something config (scale (256, 320), crop
to 224, flip; with and without RandAugment ``rand-m7-n4-mstd0.5-inc1``) with ``data.augment_on`` ``workers``
(today's path: the loader worker decodes and augments with PIL/timm) or ``device`` (the worker decodes at the
smallest size that covers the scaled frame and draws the augmentation; the training process applies it to the
batch) and measures:

* ``host_cpu_s_per_clip``: CPU-seconds one loader process spends per clip (decode, draws, augmentation in the
  workers' placement, collation), one torch thread, best of ``--repeats``; ``clips_per_s_per_core`` is its inverse;
* ``device_aug_s_per_clip``: the batched augmentation of ``--batch`` clips on the training device (CUDA when
  available, else this CPU with every core), per clip, best of ``--repeats``; 0 in the workers' placement;
* ``loader_clips_per_s``: clips/s of a DataLoader with ``--workers`` workers (wall clock; shared machines: noisy).

Then the frozen backbone's forward on the same batch (``--backbone``, random weights, fp32 on CPU, bf16 on CUDA)
gives each device row's ``device_aug_vs_backbone``. ``--json OUT`` writes the rows (fields ``source``,
``placement``, ``randaugment``, ``host_cpu_s_per_clip``, ``clips_per_s_per_core``, ``device_aug_s_per_clip``, ...).
torchcodec rows need the system's FFmpeg libraries; without them they are skipped with the reason.
"""
from __future__ import annotations

import argparse
import json
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
from side4video.data import TrainSampler, collate_train, create_dataset, create_loader  # noqa: E402
from side4video.data.decoders import torchcodec_available  # noqa: E402
from side4video.data.device_augment import batch_frames  # noqa: E402
from side4video.data.toy import write_frame_folder, write_video  # noqa: E402

NUM_FRAMES, NUM_VIDEOS = 64, 8
IMAGE_TMPL = "img_{:05d}.jpg"
SOURCES = ("jpeg", "decord", "pyav", "torchcodec", "shards", "pyav_1080p", "decord_1080p")
LABELS = {"jpeg": "JPEG frames 340x256", "decord": "mp4 340x256 (decord)", "pyav": "mp4 340x256 (PyAV)",
          "torchcodec": "mp4 340x256 (torchcodec)", "shards": "WebDataset shards of JPEG frames",
          "pyav_1080p": "mp4 1920x1080 (PyAV)", "decord_1080p": "mp4 1920x1080 (decord)"}


def synthetic_video(seed: int, height: int, width: int, frames: int = NUM_FRAMES) -> np.ndarray:
    """[F, H, W, 3] uint8: a smooth random texture drifting right, with blocks moving across it."""
    rng = np.random.default_rng(seed)
    cell = max(16, width // 20)
    coarse = rng.uniform(0, 255, size=(height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    texture = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(2, 0, 1)[None], scale_factor=cell,
                                              mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    texture = texture + rng.normal(0, 6, texture.shape).astype(np.float32)
    block = height // 6
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        frame = np.roll(texture, 2 * t, axis=1)[:height, :width].copy()
        for b in range(3):
            top = (height // 6 + height // 4 * b + 2 * t) % (height - block)
            left = (width // 10 + width // 4 * b + 5 * t) % (width - block)
            frame[top:top + block, left:left + block] = 60 + 60 * b
        out[t] = np.clip(frame, 0, 255)
    return out


def write_data(root: str, sources: list[str]) -> dict[str, tuple[str, str, str]]:
    """(data root, list file, data.format) per source."""
    small = [synthetic_video(i, 256, 340) for i in range(NUM_VIDEOS)]
    frames_root, videos_root = os.path.join(root, "frames"), os.path.join(root, "videos")
    for i, clip in enumerate(small):
        write_frame_folder(os.path.join(frames_root, f"v{i}"), clip, image_tmpl=IMAGE_TMPL, quality=90)
    frames_list = _write_list(root, "frames.txt", [f"v{i} {NUM_FRAMES} {i % 4}" for i in range(NUM_VIDEOS)])
    data = {"jpeg": (frames_root, frames_list, "files")}
    if {"decord", "pyav", "torchcodec"} & set(sources):
        for i, clip in enumerate(small):
            write_video(os.path.join(videos_root, f"v{i}.mp4"), clip, codec="libx264")
        videos_list = _write_list(root, "videos.txt", [f"v{i}.mp4 {i % 4}" for i in range(NUM_VIDEOS)])
        data.update({name: (videos_root, videos_list, "files") for name in ("decord", "pyav", "torchcodec")})
    if {"pyav_1080p", "decord_1080p"} & set(sources):
        hd_root = os.path.join(root, "hd")
        for i in range(2):
            write_video(os.path.join(hd_root, f"hd{i}.mp4"), synthetic_video(i, 1080, 1920), codec="libx264")
        hd_list = _write_list(root, "hd.txt", [f"hd{i}.mp4 {i % 4}" for i in range(2)])
        data.update({name: (hd_root, hd_list, "files") for name in ("pyav_1080p", "decord_1080p")})
    if "shards" in sources:
        from side4video.prep.shards import write_shards

        shard_dir = os.path.join(root, "shards")
        write_shards(list_file=frames_list, root=frames_root, out=shard_dir, shard_size=4, tmpl=IMAGE_TMPL)
        data["shards"] = ("", os.path.join(shard_dir, "shard-{000000..000001}.tar"), "webdataset")
    return data


def _write_list(root: str, name: str, lines: list[str]) -> str:
    path = os.path.join(root, name)
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def build_dataset(data: tuple[str, str, str], source: str, frames: int, rand_aug: bool, placement: str,
                  batch: int):
    data_root, list_file, data_format = data
    backend = source.split("_")[0] if source not in ("jpeg", "shards") else "decord"
    cfg = config_section("data", dict(dataset="somethingv2", num_classes=4, num_segments=frames, input_size=224,
                                      train_root=data_root, train_list=list_file, image_tmpl=IMAGE_TMPL,
                                      rand_aug=rand_aug, flip_pairs=[], video_backend=backend,
                                      format=data_format, batch_size=batch, shard_shuffle=0,
                                      augment_on=placement))
    return create_dataset(cfg, "train", seed=0)


def samples(dataset, count: int, start: int = 0) -> list[dict]:
    """``count`` training samples, cycling over the dataset (a stream is iterated, epoch after epoch)."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        dataset.set_batch_size(1)      # a stream deals whole batches: count single samples here
        out, epoch = [], 0
        while len(out) < count:
            dataset.set_epoch(epoch)
            before = len(out)
            out.extend(sample for _, sample in zip(range(count - len(out)), iter(dataset)))
            if len(out) == before:
                raise RuntimeError("the stream yielded no samples")
            epoch += 1
        return out
    return [dataset[(start + i) % len(dataset)] for i in range(count)]


def host_seconds_per_clip(dataset, clips: int, repeats: int) -> float:
    """CPU-seconds of this process per clip (decode, draws, worker-side augmentation, collation), best of repeats."""
    samples(dataset, 1)  # warm caches and lazy imports
    best = float("inf")
    for repeat in range(repeats):
        start = time.process_time()
        collate_train(samples(dataset, clips, start=repeat * clips))
        best = min(best, (time.process_time() - start) / clips)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_seconds_per_clip(dataset, batch: int, repeats: int, device: torch.device) -> float:
    raw = collate_train(samples(dataset, batch))
    batch_frames(raw, device)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        batch_frames(raw, device)
        _sync(device)
        best = min(best, (time.perf_counter() - start) / batch)
    return best


def loader_clips_per_second(dataset, workers: int, seconds: float, batch: int = 4) -> float:
    """Steady-state clips/s of a DataLoader (the first batch, worker start-up, is not timed)."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        loader = create_loader(dataset, batch_size=batch, num_workers=workers, persistent_workers=False,
                               prefetch_factor=4 if workers else None)
    else:
        sampler = TrainSampler(len(dataset) * 1000, seed=0)
        loader = create_loader(_Cycle(dataset), batch_size=batch, sampler=sampler, num_workers=workers,
                               persistent_workers=False, prefetch_factor=4 if workers else None)
    clips, start = 0, None
    for raw in loader:
        if start is None:
            start = time.perf_counter()
            continue
        clips += raw["num_samples"]
        if time.perf_counter() - start > seconds:
            break
    return clips / (time.perf_counter() - start) if clips else float("nan")


class _Cycle(torch.utils.data.Dataset):
    """The dataset repeated, so that a short list yields batches for as long as we time."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.split = dataset.split

    def __len__(self) -> int:
        return len(self.dataset) * 1000

    def __getitem__(self, index: int):
        return self.dataset[index % len(self.dataset)]


def backbone_seconds_per_clip(arch: str, batch: int, frames: int, repeats: int, device: torch.device) -> float:
    """The frozen image tower's forward over ``batch`` clips of ``frames`` 224 px frames, per clip."""
    import open_clip  # deferred: only this measurement needs it

    model = open_clip.create_model(arch, pretrained=None).visual.eval().to(device)
    images = torch.randn(batch * frames, 3, 224, 224, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    best = float("inf")
    with torch.no_grad(), autocast:
        model(images[:frames])  # warm-up
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            model(images)
            _sync(device)
            best = min(best, (time.perf_counter() - start) / batch)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default="jpeg,decord,pyav,shards,pyav_1080p,decord_1080p",
                        help=f"comma-separated, from {', '.join(SOURCES)}")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip T")
    parser.add_argument("--clips", type=int, default=24, help="clips per host measurement")
    parser.add_argument("--batch", type=int, default=32, help="clips per batch for the device augmentation")
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many measurements")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="DataLoader workers for the loader column (0: skip it)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds of the loader column")
    parser.add_argument("--backbone", default="ViT-B-16", help="open_clip architecture for the ratio ('none': skip)")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        parser.error(f"unknown sources {unknown}; choose from {', '.join(SOURCES)}")
    notes = []
    if "torchcodec" in sources:
        ok, reason = torchcodec_available()
        if not ok:
            sources.remove("torchcodec")
            notes.append(f"torchcodec rows skipped: {reason}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 1
    header = (f"# data path cost: {platform.processor() or platform.machine()}, {cores} CPUs, torch "
              f"{torch.__version__}, device {device}; {args.frames}x224 clips, Something-Something augmentation; "
              f"host: 1 thread, {args.clips} clips, best of {args.repeats}; device augmentation: batch {args.batch}")
    print(header)
    for note in notes:
        print(note)
    rows = []
    print("\n| source | RandAugment | placement | host CPU s/clip | clips/s per core | device aug s/clip | "
          f"loader clips/s ({args.workers} workers) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        data = write_data(root, sources)
        for source in sources:
            for rand_aug in (False, True):
                for placement in ("workers", "device"):
                    torch.set_num_threads(1)
                    dataset = build_dataset(data[source], source, args.frames, rand_aug, placement, args.batch)
                    clips = args.clips if "1080p" not in source else max(4, args.clips // 3)
                    host = host_seconds_per_clip(dataset, clips, args.repeats)
                    torch.set_num_threads(cores)
                    on_device = device_seconds_per_clip(dataset, args.batch, args.repeats, device) \
                        if placement == "device" else 0.0
                    loader = loader_clips_per_second(dataset, args.workers, args.seconds) if args.workers else None
                    row = dict(source=source, placement=placement, randaugment=rand_aug,
                               host_cpu_s_per_clip=host, clips_per_s_per_core=1.0 / host,
                               device_aug_s_per_clip=on_device, loader_clips_per_s=loader, frames=args.frames)
                    rows.append(row)
                    loader_text = f"{loader:.1f}" if loader is not None else "-"
                    print(f"| {LABELS[source]} | {'yes' if rand_aug else 'no'} | {placement} | {host * 1e3:.1f} ms | "
                          f"{1.0 / host:.1f} | {on_device * 1e3:.1f} ms | {loader_text} |", flush=True)
    torch.set_num_threads(cores)
    backbone = None
    if args.backbone != "none":
        backbone = backbone_seconds_per_clip(args.backbone, args.batch, args.frames, 1, device)
        print(f"\nfrozen {args.backbone} forward, batch {args.batch} x {args.frames} frames on {device}: "
              f"{backbone * 1e3:.1f} ms per clip")
        for row in rows:
            row["backbone_s_per_clip"] = backbone
            row["device_aug_vs_backbone"] = row["device_aug_s_per_clip"] / backbone
    print("\nhost CPU per clip, workers (today) / device, and the device's share of the backbone forward:")
    for source in sources:
        for rand_aug in (False, True):
            pair = {r["placement"]: r for r in rows if r["source"] == source and r["randaugment"] == rand_aug}
            ratio = pair["workers"]["host_cpu_s_per_clip"] / pair["device"]["host_cpu_s_per_clip"]
            share = f", device augmentation {pair['device']['device_aug_vs_backbone']:.1%} of the backbone" \
                if backbone else ""
            print(f"  {LABELS[source]}, RandAugment {'yes' if rand_aug else 'no'}: {ratio:.2f}x less host CPU{share}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(header=header, notes=notes, device=str(device), rows=rows), handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
