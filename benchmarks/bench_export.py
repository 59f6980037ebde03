"""Latency of the exported graphs (onnxruntime CPU, torch.export pt2) against the eager model, clip and stream.

For each backbone (random weights, ``network.pretrained=false``): the clip graph of a Side4Video model (one clip of
T frames → logits, batch 1) and the stream graph of its causal variant (one frame + state → scores + state, the
state carried from step to step). Each path is timed on the same inputs: one warm-up, then the median of ``--runs``
runs, the paths taking turns. The exported graphs are built as ``side4video export`` builds them and checked
against eager (max difference in the table). Writes a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/bench_export.py [--archs tiny ViT-B/16] [--runs 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

from side4video.config import load_config
from side4video.engine.builders import backbone_from_config, model_from_config
from side4video.export.exporters import eager_runner, export_graph, load_runner
from side4video.export.graphs import GraphSpec, clip_spec, random_frames, stream_spec

TINY = "side4video/assets/tiny_clip.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "export_latency.md"
# arch → (input size, side width): the toy's tiny backbone, the reference widths otherwise
SHAPES = {TINY: (64, 64), "ViT-B/32": (224, 320), "ViT-B/16": (224, 320), "ViT-L/14": (224, 512)}


def build(arch: str, frames: int, causal: bool):
    arch = TINY if arch == "tiny" else arch
    size, side_dim = SHAPES.get(arch, (224, 320))
    cfg = load_config("configs/toy/toy_side4video.yaml", [
        f"network.arch={arch}", "network.pretrained=false", f"network.side_dim={side_dim}",
        f"network.causal={str(causal).lower()}", f"data.input_size={size}", "data.scale_size=null",
        f"data.num_segments={frames}", "network.backbone_precision=fp32"])
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone, seed=0).float().eval()
    return cfg, backbone, model


def timed(call: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def time_clip(spec: GraphSpec, runners: dict[str, Callable], cfg, runs: int) -> dict[str, tuple[float, float]]:
    """Seconds per clip (batch 1); the paths take turns run by run (a shared machine's load hits them alike)."""
    frames = random_frames((1, *spec.example[0].shape[1:]), cfg.data.mean, cfg.data.std,
                           torch.Generator().manual_seed(0))
    outputs = {name: run([frames])[0] for name, run in runners.items()}         # warm-up
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            times[name].append(timed(lambda run=run: run([frames]))[0])
    return {name: (statistics.median(times[name]), float((outputs[name] - outputs["eager"]).abs().max()))
            for name in runners}


def time_stream(spec: GraphSpec, runners: dict[str, Callable], cfg, runs: int) -> dict[str, tuple[float, float]]:
    """Seconds per pushed frame, each path feeding its own state back, the paths taking turns frame by frame; the
    max difference of the scores over all pushes."""
    generator = torch.Generator().manual_seed(0)
    states = {name: [t.clone() for t in spec.initial_state] for name in runners}
    times: dict[str, list[float]] = {name: [] for name in runners}
    worst = dict.fromkeys(runners, 0.0)
    for index in range(runs + 1):                                   # the first push is the warm-up
        frame = random_frames(tuple(spec.example[0].shape), cfg.data.mean, cfg.data.std, generator)
        scores = {}
        for name, run in runners.items():
            seconds, result = timed(lambda run=run, inputs=[frame, *states[name]]: run(inputs))
            if index:
                times[name].append(seconds)
            scores[name], states[name] = result[0], list(result[1:])
        for name in runners:
            worst[name] = max(worst[name], float((scores[name] - scores["eager"]).abs().max()))
    return {name: (statistics.median(times[name]), worst[name]) for name in runners}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["tiny", "ViT-B/16"],
                        help="backbones: tiny (the toy's 4-layer 64 px one) or open_clip names")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--formats", nargs="+", default=["onnx", "pt2"], choices=["onnx", "pt2"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            for mode in ("clip", "stream"):
                cfg, backbone, model = build(arch, args.frames, causal=mode == "stream")
                spec = (clip_spec(cfg, backbone, model) if mode == "clip"
                        else stream_spec(cfg, backbone, model))
                runners: dict[str, Callable] = {"eager": eager_runner(spec.module)}
                export_seconds = {}
                for fmt in args.formats:
                    path = Path(tmp) / f"{len(rows)}-{mode}.{fmt}"
                    start = time.perf_counter()
                    info = export_graph(spec, fmt, path)
                    export_seconds[fmt] = (time.perf_counter() - start, info["exporter"])
                    runners[fmt] = load_runner(fmt, path, threads=args.threads)
                timed = (time_clip if mode == "clip" else time_stream)(spec, runners, cfg, args.runs)
                name = "tiny (4 layers, 64 px)" if arch in ("tiny", TINY) else arch
                for path_name, (seconds, difference) in timed.items():
                    exported = export_seconds.get(path_name)
                    rows.append((name, mode, path_name, seconds, seconds / timed["eager"][0], difference,
                                 exported))
                    print(rows[-1], flush=True)
    write_table(args, rows, load)


def write_table(args, rows, load: float) -> None:
    unit = {"clip": f"per clip (batch 1, {args.frames} frames)", "stream": "per pushed frame"}
    lines = [
        "# Exported graphs vs eager: CPU latency (`benchmarks/bench_export.py`)", "",
        f"- command: `OMP_NUM_THREADS={args.threads} python benchmarks/bench_export.py --archs "
        f"{' '.join(args.archs)} --runs {args.runs} --frames {args.frames}`",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} "
        f"thread(s) for torch and onnxruntime (load average at start {load:.1f}: the machine is shared)",
        f"- versions: torch {torch.__version__}, {_onnx_versions()}, Python {platform.python_version()}",
        "- models: Side4Video side network (random backbone weights, side width 64 tiny / 320 ViT-B), fp32; "
        "clip: the clip graph (backbone + side network + head, batch 1); stream: the causal variant's StreamStep "
        "(one frame + state → scores + state), the state fed back each push",
        f"- time: one warm-up, then the median of {args.runs} runs, the paths taking turns run by run (stream: "
        f"frame by frame, each path carrying its own state); max diff: |path - eager| on the logits/scores",
        "", "| backbone | graph | path | latency | vs eager | max diff | export time (exporter) |",
        "|---|---|---|---|---|---|---|"]
    for name, mode, path, seconds, ratio, difference, exported in rows:
        export_text = f"{exported[0]:.1f} s ({exported[1]})" if exported else "–"
        lines.append(f"| {name} | {mode}, {unit[mode]} | {path} | {seconds * 1e3:.1f} ms | {ratio:.2f}x | "
                     f"{difference:.1e} | {export_text} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _onnx_versions() -> str:
    try:
        import onnx  # deferred: optional dependency
        import onnxruntime  # deferred: optional dependency
    except ImportError:
        return "onnx not installed"
    return f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}"


if __name__ == "__main__":
    main()
