"""``side4video train`` (and ``python train.py``): train a side network or a baseline head on a frozen backbone."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..config import load_config
from ..engine.trainer import Trainer
from .common import add_config_arguments, add_launcher_arguments, is_main_process, run_command


def main(argv: Sequence[str] | None = None, plugins: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="side4video train", description="Train a side network (or a baseline head) on a frozen CLIP/EVA "
                                             "backbone with DeepSpeed. Launch with scripts/run_train_vision.sh "
                                             "for several GPUs/nodes.")
    add_config_arguments(parser)
    add_launcher_arguments(parser)
    parser.add_argument("--output", default=None, help="output directory (default: exp/<dataset>/<arch>/<config>)")
    parser.add_argument("--resume", default=None, help="checkpoint path or 'auto' (overrides the config's resume)")
    parser.add_argument("--allow_changes", action="store_true",
                        help="resume even with changes that alter the model or what a step means (recorded in the "
                             "run; see the README's resume policy)")
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = load_config(args.config, args.opts)
        if args.resume:
            cfg.resume = args.resume
        trainer = Trainer(cfg, args.output, plugins=plugins, allow_changes=args.allow_changes)
        summary = trainer.fit()
        if is_main_process():
            best = summary.get("best_val")
            monitor = {"top1": "top-1"}.get(summary.get("monitor"), summary.get("monitor"))
            print(f"done: best val {monitor} {best:.2f}% -> {summary['output_dir']}" if best is not None
                  else f"done -> {summary['output_dir']}")
        return 0

    return run_command(body, interrupted=lambda: "interrupted before training started; nothing was saved")


if __name__ == "__main__":
    raise SystemExit(main())
