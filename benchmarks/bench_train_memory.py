"""Superseded by ``benchmarks/train_memory_speed.py``; kept so that the old command still works.

Runs the new benchmark's exact saved-for-backward comparison (side network D=320, light D=128, frame-averaging
probe, full fine-tuning of the image tower, the frozen floor) with one timed step each, no scaling or multi-view
rows, and prints the table instead of writing benchmarks/results/. Extra arguments go to the new script
(``--precision bf16``, ``--methods ...``, ``--json PATH``; see ``train_memory_speed.py --help``).

    python benchmarks/bench_train_memory.py [--arch ViT-B-16] [--batch 2] [--frames 8] [--classes 174]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from train_memory_speed import main  # noqa: E402

DEFAULTS = ["--methods", "side", "light", "probe", "full_ft", "floor", "--steps", "1", "--no-scaling",
            "--no-multiview", "--breakdown", "0", "--output", "-"]

if __name__ == "__main__":
    main(DEFAULTS + sys.argv[1:])   # later arguments win
