"""The CPU demo: toy temporal dataset → side network vs frame-averaging probe → 3 crops × 2 clips test → table.

Every step runs the commands a user would run (``scripts/run_train_vision.sh``, ``scripts/run_test_vision.sh``),
so the demo exercises exactly the documented paths::

    sh scripts/run_demo.sh            # = python -m side4video.tools.demo
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from ..backbones.tiny import TINY_CLIP_CONFIG, make_tiny_backbone
from ..data.toy import generate_toy_dataset
from ..engine.logging_utils import format_table

ROOT = Path(__file__).resolve().parents[2]
RUNS = [("side4video", "configs/toy/toy_side4video.yaml", "Side4Video side network"),
        ("frame_avg", "configs/toy/toy_frame_avg.yaml", "frame-averaging probe")]


def _run(command: list[str]) -> None:
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"demo step failed (exit {result.returncode}): {' '.join(command)}")


MARKER = ".side4video-demo"


def prepare_output(out: Path) -> None:
    """Clear ``out`` only if the demo made it (it holds the demo's marker file) or it is empty; never anything else
    (``--out .`` must not delete a checkout)."""
    if out.exists():
        if not out.is_dir():
            raise SystemExit(f"error: --out {out} is a file, not a folder")
        entries = list(out.iterdir())
        if entries and not (out / MARKER).is_file():
            raise SystemExit(f"error: --out {out} is not empty and was not written by the demo; choose another "
                             "folder (the demo clears its output folder before it runs)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("written by python -m side4video.tools.demo; cleared by the next demo run\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="toy_data", help="where the toy dataset is written (reused if complete)")
    parser.add_argument("--out", default="work_dirs/demo",
                        help="training and test outputs; a folder the demo wrote before is cleared, any other "
                             "non-empty folder is refused")
    parser.add_argument("--test_crops", type=int, default=3)
    parser.add_argument("--test_clips", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.time()
    data = ROOT / args.data
    generate_toy_dataset(str(data))
    make_tiny_backbone(TINY_CLIP_CONFIG, data / "tiny_clip.safetensors")
    out = (ROOT / args.out).resolve()
    prepare_output(out)
    rows = []
    for name, config, title in RUNS:
        run_dir = out / name
        train_start = time.time()
        _run(["sh", "scripts/run_train_vision.sh", config, "--output", str(run_dir),
              "--opts", f"data.train_root={data}/frames", f"data.val_root={data}/frames",
              f"data.train_list={data}/train_frames.txt", f"data.val_list={data}/val_frames.txt",
              f"data.label_list={data}/labels.csv", f"network.pretrained={data}/tiny_clip.safetensors"])
        train_time = time.time() - train_start
        _run(["sh", "scripts/run_test_vision.sh", config, str(run_dir / "checkpoints" / "best.pt"),
              "--test_crops", str(args.test_crops), "--test_clips", str(args.test_clips),
              "--output", str(run_dir / "test"),
              "--opts", f"data.val_root={data}/frames", f"data.val_list={data}/val_frames.txt",
              f"data.label_list={data}/labels.csv", f"network.pretrained={data}/tiny_clip.safetensors"])
        summary = json.loads((run_dir / "summary.json").read_text())
        results = json.loads((run_dir / "test" / "results.json").read_text())
        rows.append((title, summary["trainable_params"], results["top1"], results["top5"], train_time,
                     results["protocol"]))
    print()
    print(f"Toy temporal dataset (8 classes, chance 12.5%), tiny frozen backbone, test protocol {rows[0][5]} "
          f"(frames x crops x clips)")
    print(format_table(["method", "trainable params", "top-1", "top-5", "train time (s)"],
                       [[title, f"{params:,}", round(top1, 1), round(top5, 1), round(seconds)]
                        for title, params, top1, top5, seconds, _ in rows]))
    print(f"\ndemo finished in {time.time() - start:.0f} s; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
