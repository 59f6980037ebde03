"""Feature-extraction throughput against plain backbone inference, side by side in one run.

"Plain" runs ``encode_image`` on clips already decoded and in memory; "extract_features" is the whole tool:
decoding, test views, the backbone, and writing safetensors shards. The ratio is what the pipeline costs on
top of the network itself.

    python benchmarks/bench_extract.py [--arch ViT-B/32] [--videos 64] [--batch 8]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from side4video.config import load_config
from side4video.data import create_dataset, normalize_frames
from side4video.data.toy import generate_toy_dataset
from side4video.engine.builders import backbone_from_config
from side4video.tools.extract_features import extract_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B/32")
    parser.add_argument("--videos", type=int, default=64, help="videos (a multiple of 8)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_toy_dataset(str(data), train_per_class=1, val_per_class=args.videos // 8, height=256, width=320,
                             formats=("frames",))
        cfg = load_config("configs/toy/toy_side4video.yaml", [
            f"network.arch={args.arch}", "network.pretrained=false", "data.input_size=224", "data.scale_size=null",
            f"data.num_segments={args.frames}", f"data.batch_size={args.batch}", "data.workers=0",
            f"data.val_root={data}/frames", f"data.val_list={data}/val_frames.txt",
            f"data.label_list={data}/labels.csv"])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        backbone = backbone_from_config(cfg, device)
        dataset = create_dataset(cfg.data, "test", seed=cfg.seed)
        clips = [dataset[i]["frames"] for i in range(len(dataset))]       # decoded beforehand: not timed
        start = time.perf_counter()
        with torch.no_grad():
            for first in range(0, len(clips), args.batch):
                frames = torch.stack(clips[first:first + args.batch]).to(device)
                backbone.encode_image(normalize_frames(frames, cfg.data.mean, cfg.data.std).flatten(0, 2))
        if device.type == "cuda":
            torch.cuda.synchronize()
        plain = len(clips) / (time.perf_counter() - start)
        start = time.perf_counter()
        extract_features(cfg, data / "val_frames.txt", data / "frames", Path(tmp) / "features",
                         batch_size=args.batch, workers=0, progress=False)
        tool = len(clips) / (time.perf_counter() - start)
    print(f"{args.arch}, {args.frames} frames x 224 px, 1 crop x 1 clip, batch {args.batch}, {len(clips)} videos "
          f"(320x256 JPEG frames), {device.type}")
    print("| path | videos/s | frames/s | relative |")
    print("|---|---|---|---|")
    for name, speed in (("plain encode_image (decoded clips in memory)", plain),
                        ("extract_features (decode + views + backbone + shards)", tool)):
        print(f"| {name} | {speed:.2f} | {speed * args.frames:.1f} | {speed / plain:.2f}x |")


if __name__ == "__main__":
    main()
