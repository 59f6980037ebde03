"""``side4video test`` (and ``python test.py``): multi-view testing of a checkpoint."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..data.transforms import TEST_CROP_CHOICES
from ..engine.builders import config_for_checkpoint, stored_config
from ..engine.testing import run_test
from .common import add_config_arguments, add_launcher_arguments, positive_int, run_command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="side4video test", description="Evaluate a trained checkpoint with crops x clips views per video.")
    add_config_arguments(parser, required=False)
    add_launcher_arguments(parser)
    parser.add_argument("--weights", required=True, help="checkpoint (checkpoints/best.pt or last.pt, or an official "
                                                         "Side4Video checkpoint); without --config its stored config "
                                                         "is used")
    parser.add_argument("--test_crops", type=int, default=None, choices=TEST_CROP_CHOICES,
                        help="spatial crops per clip (default: data.test_crops)")
    parser.add_argument("--test_clips", type=positive_int, default=None,
                        help="temporal clips per video (default: data.test_clips)")
    parser.add_argument("--dense", action="store_true", help="dense-window sampling instead of TSN segments")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="videos per forward batch (default: data.batch_size)")
    parser.add_argument("--max_views", type=positive_int, default=64,
                        help="at most this many clips per network forward")
    parser.add_argument("--average", default="prob", choices=("prob", "logit"),
                        help="prob: softmax per view then mean (the reference); logit: mean of raw logits")
    parser.add_argument("--output", default=None, help="results folder (default: next to the checkpoint, named by "
                                                       "weights, protocol, options and data)")
    parser.add_argument("--allow_other_backbone", action="store_true",
                        help="test even though the backbone weights differ from those the checkpoint was trained "
                             "with (recorded in results.json)")
    args = parser.parse_args(argv)

    def body() -> int:
        cfg = config_for_checkpoint(args.weights, args.config, args.opts)
        run_test(cfg, args.weights, test_crops=args.test_crops, test_clips=args.test_clips, dense=args.dense,
                 batch_size=args.batch_size, max_views=args.max_views, average=args.average, output=args.output,
                 allow_other_backbone=args.allow_other_backbone, trained_config=stored_config(args.weights))
        return 0

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
