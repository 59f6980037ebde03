"""Per-frame cost of online recognition, side by side in one run: the streaming step (frozen backbone on the new
frame + the causal side network's per-frame step + the window head) against the frozen backbone's single-frame
forward alone (the floor) and against recomputing the whole T-frame window for every new frame (what a
bidirectional model needs).

    python benchmarks/bench_streaming.py [--archs tiny ViT-B/16] [--frames 8] [--repeats 7] [--threads 1]
                                         [--json OUT.json] [--markdown benchmarks/results/streaming.md]

Random weights (``network.pretrained=false``; the tiny backbone is built in memory), fp32, batch 1, on the CPU
(or the GPU when one is present). The three paths alternate within each repeat; the table shows medians and the
ratios of the medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

from side4video.backbones.tiny import TINY_CLIP_CONFIG as TINY_CLIP_JSON
from side4video.config import load_config
from side4video.engine.builders import backbone_from_config, model_from_config
from side4video.models import run_model
from side4video.streaming import create_stream_step

SIDE_DIM = {"tiny": 64}


def build(arch: str, frames: int, device: torch.device):
    tiny = arch == "tiny"
    cfg = load_config("configs/toy/toy_causal.yaml", [
        f"network.arch={TINY_CLIP_JSON if tiny else arch}", "network.pretrained=false",
        f"data.input_size={64 if tiny else 224}", f"data.scale_size={'[64, 80]' if tiny else 'null'}",
        f"data.num_segments={frames}", f"network.side_dim={SIDE_DIM.get(arch, 320)}"])
    backbone = backbone_from_config(cfg, device).eval()
    model = model_from_config(cfg, backbone, seed=0).to(device).eval()
    return cfg, backbone, model


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(arch: str, frames: int, repeats: int, device: torch.device) -> dict:
    cfg, backbone, model = build(arch, frames, device)
    step = create_stream_step(cfg, backbone, model)
    size = backbone.info.image_size
    generator = torch.Generator().manual_seed(0)
    stream = torch.randn(repeats + frames + 2, 3, size, size, generator=generator).to(device)
    state = step.initial_state()
    layers = list(model.backbone_layers)
    timings: dict[str, list[float]] = {"backbone": [], "streaming": [], "window": []}
    with torch.no_grad():
        for index in range(frames):                                  # fill the window (and warm up)
            _, *state = step(stream[index:index + 1], *state)
        for index in range(frames, frames + repeats):
            frame = stream[index:index + 1]
            for name in ("backbone", "streaming", "window"):
                synchronize(device)
                start = time.perf_counter()
                if name == "backbone":
                    backbone.tap(frame[:, None], layers=layers, embedding=False)
                elif name == "streaming":
                    _, *state = step(frame, *state)
                else:
                    run_model(backbone, model, stream[None, index - frames + 1:index + 1])
                synchronize(device)
                timings[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) * 1000 for name, values in timings.items()}
    return {"arch": arch, "frames": frames, "image_size": size, "side_dim": model.side_dim,
            "backbone_ms": medians["backbone"], "streaming_ms": medians["streaming"], "window_ms": medians["window"],
            "streaming_vs_backbone": medians["streaming"] / medians["backbone"],
            "window_vs_streaming": medians["window"] / medians["streaming"]}


def markdown(rows: list[dict], device: str, threads: int, repeats: int) -> str:
    lines = [f"Per new frame, median of {repeats} (alternating), batch 1, fp32, {device}, {threads} thread(s); random "
             "weights, causal side network (configs/toy/toy_causal.yaml's network).", "",
             "| backbone | T | side D | backbone single frame | streaming step | recompute T-frame window | "
             "streaming / backbone (goal ≤ 1.3) | window / streaming (goal ≥ 6) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arch']} ({r['image_size']} px) | {r['frames']} | {r['side_dim']} | "
                     f"{r['backbone_ms']:.1f} ms | {r['streaming_ms']:.1f} ms | {r['window_ms']:.1f} ms | "
                     f"{r['streaming_vs_backbone']:.2f}x | "
                     f"{r['window_vs_streaming']:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["tiny", "ViT-B/16"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [measure(arch, args.frames, args.repeats, device) for arch in args.archs]
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    text = markdown(rows, name, args.threads, args.repeats)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
