"""Command-line entry points behind the root ``train.py`` and ``test.py``, and the error handling every command shares."""
from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Callable, Sequence

# Operating-system errors a user causes (a read-only or full disk, a missing permission): one line, no traceback.
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EISDIR,
               errno.ENOTDIR}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def run_command(body: Callable[[], int], *, interrupted: Callable[[], str] | None = None, code: int = 1) -> int:
    """Run a command's body: input errors (:class:`Side4VideoError`, user-caused OS errors) become one line on
    stderr and exit status ``code``; Ctrl-C one line (with how to resume) and 130; anything else keeps its
    traceback."""
    from .errors import Side4VideoError
    try:
        return body()
    except Side4VideoError as exc:
        return fail(str(exc), code=code)
    except OSError as exc:
        if exc.errno not in USER_ERRNOS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", code=code)
    except KeyboardInterrupt:
        message = interrupted() if interrupted is not None else "interrupted"
        if is_main_process():
            print(f"\n{message}", file=sys.stderr)
        return 130


def fail(message: str, code: int = 2) -> int:
    """Print a one-line error (no traceback: the message names the file, key or video) and return ``code``."""
    if is_main_process():
        print(f"error: {message}", file=sys.stderr)
    return code


def _common_arguments(parser: argparse.ArgumentParser, *, config_required: bool = True) -> None:
    from .tools._common import add_config_arguments
    add_config_arguments(parser, required=config_required)
    # Accepted for compatibility with the reference scripts and launchers; they carry nothing we need.
    parser.add_argument("--log_time", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def train_main(argv: Sequence[str] | None = None, plugins: list | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a side network (or a baseline head) on a frozen CLIP/EVA backbone "
                                     "with DeepSpeed. Launch with scripts/run_train_vision.sh for several GPUs/nodes.")
    _common_arguments(parser)
    parser.add_argument("--output", default=None, help="output directory (default: exp/<dataset>/<arch>/<config>)")
    parser.add_argument("--resume", default=None, help="checkpoint path or 'auto' (overrides the config's resume)")
    args = parser.parse_args(argv)
    state: dict = {}

    def body() -> int:
        from .config import load_config
        from .engine.trainer import Trainer
        cfg = load_config(args.config, args.opts)
        if args.resume:
            cfg.resume = args.resume
        trainer = Trainer(cfg, args.output, plugins=plugins)
        state["trainer"] = trainer
        summary = trainer.fit()
        if is_main_process():
            best = summary.get("best_val_top1")
            print(f"done: best val top-1 {best:.2f}% -> {summary['output_dir']}" if best is not None
                  else f"done -> {summary['output_dir']}")
        return 0

    def interrupted() -> str:
        trainer = state.get("trainer")
        where = ""
        if trainer is not None and trainer.progress_state.get("epoch") is not None:
            where = f" at epoch {trainer.progress_state['epoch']}, step {trainer.progress_state['step']}"
        out = f" --output {trainer.output_dir}" if trainer is not None else ""
        return (f"interrupted{where}; resume from the last checkpoint with: python train.py --config {args.config}"
                f"{out} --resume auto")

    return run_command(body, interrupted=interrupted)


def test_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="test.py", description="Evaluate a trained checkpoint with crops x clips views per video.")
    _common_arguments(parser, config_required=False)
    parser.add_argument("--weights", required=True, help="checkpoint (checkpoints/best.pt or last.pt, or an official "
                                                         "Side4Video checkpoint); without --config its stored config "
                                                         "is used")
    from .data.transforms import TEST_CROP_CHOICES
    parser.add_argument("--test_crops", type=int, default=None, choices=TEST_CROP_CHOICES,
                        help="spatial crops per clip (default: data.test_crops)")
    parser.add_argument("--test_clips", type=positive_int, default=None,
                        help="temporal clips per video (default: data.test_clips)")
    parser.add_argument("--dense", action="store_true", help="dense-window sampling instead of TSN segments")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="videos per forward batch (default: data.batch_size)")
    parser.add_argument("--max_views", type=positive_int, default=64, help="at most this many clips per network forward")
    parser.add_argument("--average", default="prob", choices=("prob", "logit"),
                        help="prob: softmax per view then mean (the reference); logit: mean of raw logits")
    parser.add_argument("--output", default=None, help="results folder (default: next to the checkpoint, named by "
                                                       "weights, protocol and options)")
    args = parser.parse_args(argv)

    def body() -> int:
        from .engine.builders import config_for_checkpoint
        from .engine.testing import run_test
        cfg = config_for_checkpoint(args.weights, args.config, args.opts)
        run_test(cfg, args.weights, test_crops=args.test_crops, test_clips=args.test_clips, dense=args.dense,
                 batch_size=args.batch_size, max_views=args.max_views, average=args.average, output=args.output)
        return 0

    return run_command(body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_main())
