"""Text→video retrieval on the toy (MSR-VTT layout): the side network against frame-level baselines.

    python benchmarks/bench_retrieval_toy.py [--data toy_retrieval] [--work exp/retrieval_toy] [--epochs 10]
                                             [--markdown benchmarks/results/retrieval_toy.md]

Rows, each on the same data, frozen tiny CLIP (random weights, image and text towers) and solver:
* ``frozen CLIP meanP``: no training; the cosine of the caption with the mean of the frozen frame embeddings;
* ``temporal transformer + meanP``: CLIP4Clip's ``seqTransf`` trained over the frozen frame embeddings;
* ``side network + meanP`` and ``side network + WTI`` (the reference): ``configs/toy/toy_retrieval_msrvtt.yaml``.

The test captions name a colour (visible in any frame) and a motion (only in the frame order); 64 test videos, one
per (motion, colour), so chance R@1 is 1.6%, and a model that finds the colour but not the motion direction gets at
most 1 in 2 (each motion has its reverse) — in practice far less, as moving/rotating/growing also look alike frame by
frame. Finished runs (``done.json``) are read back, not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/toy/toy_retrieval_msrvtt.yaml"
RUNS = {   # name -> task options
    "temporal transformer + meanP": "{type: retrieval, sim_header: meanP, video_head: temporal_transformer}",
    "side network + meanP": "{type: retrieval, sim_header: meanP}",
    "side network + WTI (reference)": "{type: retrieval, sim_header: wti}",
}


def data_opts(data: Path) -> list[str]:
    return [f"data.train_csv={data}/msrvtt_data/MSRVTT_train.9k.csv",
            f"data.val_csv={data}/msrvtt_data/MSRVTT_JSFUSION_test.csv", f"data.data_path={data}/msrvtt_data",
            f"data.features_path={data}/videos", f"network.pretrained={data}/tiny_clip.safetensors"]


def frozen_meanp(data: Path) -> dict:
    """The untrained model with meanP: its frame embeddings are frozen CLIP's exactly (zero-initialised side_proj)."""
    from side4video.config import load_config
    from side4video.data import create_loader
    from side4video.engine.builders import backbone_from_config, model_from_config
    from side4video.tasks import create_task

    cfg = load_config(CONFIG, [*data_opts(data), "task={type: retrieval, sim_header: meanP}", "data.workers=0"])
    task = create_task(cfg)
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone, seed=cfg.seed)
    _, val, _, collate = task.build_datasets(cfg, cfg.seed)
    loader = create_loader(val, batch_size=16, collate_fn=collate)
    evaluation = task.evaluate(backbone, model, loader, device=torch.device("cpu"), mean=cfg.data.mean,
                               std=cfg.data.std)
    return dict(metrics=evaluation.metrics, seconds=0.0, epochs=0)


def train(name: str, task: str, data: Path, work: Path, epochs: int) -> dict:
    out = work / name.split(" (")[0].replace(" + ", "_").replace(" ", "_")
    if not (out / "done.json").is_file():
        start = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "console.log", "w") as log:
            subprocess.run([sys.executable, "-m", "side4video.tools.train", "--config", CONFIG, "--output", str(out),
                            "--opts", f"task={task}", f"solver.epochs={epochs}", "logging.progress=false",
                            *data_opts(data)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
        (out / "done.json").write_text(json.dumps(dict(seconds=time.perf_counter() - start)))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("val_t2v_R1") is not None]
    last = rows[-1]
    metrics = {k[4:]: v for k, v in last.items() if k.startswith("val_")}
    return dict(metrics=metrics, seconds=json.loads((out / "done.json").read_text())["seconds"], epochs=len(rows),
                curve=[r["val_t2v_R1"] for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("toy_retrieval"))
    parser.add_argument("--work", type=Path, default=Path("exp/retrieval_toy"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--markdown", type=Path, default=Path("benchmarks/results/retrieval_toy.md"))
    args = parser.parse_args(argv)
    from side4video.retrieval.toy import generate_toy_retrieval
    generate_toy_retrieval(args.data)
    data = args.data.resolve()
    results = {"frozen CLIP meanP (no training)": frozen_meanp(data)}
    for name, task in RUNS.items():
        results[name] = train(name, task, data, args.work.resolve(), args.epochs)
        print(name, results[name]["metrics"]["t2v_R1"], flush=True)
    lines = ["| model | epochs | t2v R@1 | R@5 | R@10 | MdR | v2t R@1 | t2v R@1 per epoch | minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        m = r["metrics"]
        curve = ", ".join(f"{v:.1f}" for v in r.get("curve", [])) or "-"
        lines.append(f"| {name} | {r['epochs']} | {m['t2v_R1']:.1f} | {m['t2v_R5']:.1f} | {m['t2v_R10']:.1f} | "
                     f"{m['t2v_MdR']:.1f} | {m['v2t_R1']:.1f} | {curve} | {r['seconds'] / 60:.1f} |")
    command = "python benchmarks/bench_retrieval_toy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = (f"# Text→video retrieval on the toy\n\n`{command.strip()}` ({time.strftime('%Y-%m-%d')}, CPU)\n\n"
            + "\n".join(lines) + "\n\n64 test videos, one caption each (chance R@1 1.6%).\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
