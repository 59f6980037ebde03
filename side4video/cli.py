"""Command-line entry points behind the root ``train.py`` and ``test.py``."""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    from .tools._common import add_config_arguments
    add_config_arguments(parser)
    # Accepted for compatibility with the reference scripts and launchers; they carry nothing we need.
    parser.add_argument("--log_time", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def _fail(message: str) -> int:
    from .tools._common import fail
    return fail(message, code=1)


def train_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a side network (or a baseline head) on a frozen CLIP/EVA backbone "
                                     "with DeepSpeed. Launch with scripts/run_train_vision.sh for several GPUs/nodes.")
    _common_arguments(parser)
    parser.add_argument("--output", default=None, help="output directory (default: exp/<dataset>/<arch>/<config>)")
    parser.add_argument("--resume", default=None, help="checkpoint path or 'auto' (overrides the config's resume)")
    args = parser.parse_args(argv)
    from .config import ConfigError, load_config
    from .data import TooManyUnreadableInputs
    from .engine.trainer import Trainer, TrainingDiverged
    try:
        cfg = load_config(args.config, args.opts)
        if args.resume:
            cfg.resume = args.resume
        summary = Trainer(cfg, args.output).fit()
    except (ConfigError, TrainingDiverged, TooManyUnreadableInputs, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    best = summary.get("best_val_top1")
    print(f"done: best val top-1 {best:.2f}% -> {summary['output_dir']}" if best is not None
          else f"done -> {summary['output_dir']}")
    return 0


def test_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="test.py", description="Evaluate a trained checkpoint with crops x clips views per video.")
    _common_arguments(parser)
    parser.add_argument("--weights", required=True, help="checkpoint (checkpoints/best.pt or last.pt)")
    parser.add_argument("--test_crops", type=int, default=None, choices=(1, 3, 5, 10),
                        help="spatial crops per clip (default: data.test_crops)")
    parser.add_argument("--test_clips", type=int, default=None, help="temporal clips per video (default: data.test_clips)")
    parser.add_argument("--dense", action="store_true", help="dense-window sampling instead of TSN segments")
    parser.add_argument("--batch_size", type=int, default=None, help="videos per forward batch (default: data.batch_size)")
    parser.add_argument("--max_views", type=int, default=64, help="at most this many clips per network forward")
    parser.add_argument("--average", default="prob", choices=("prob", "logit"),
                        help="prob: softmax per view then mean (the reference); logit: mean of raw logits")
    parser.add_argument("--output", default=None, help="results folder (default: next to the checkpoint)")
    args = parser.parse_args(argv)
    from .config import ConfigError, load_config
    from .engine.testing import run_test
    try:
        cfg = load_config(args.config, args.opts)
        results = run_test(cfg, args.weights, test_crops=args.test_crops, test_clips=args.test_clips,
                           dense=args.dense, batch_size=args.batch_size, max_views=args.max_views,
                           average=args.average, output=args.output)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    return 0 if results is not None else 1


if __name__ == "__main__":  # pragma: no cover
    warnings.simplefilter("default")
    sys.exit(train_main())
