"""Export a trained checkpoint for deployment: one ONNX or torch.export (pt2) graph, validated against eager.

    side4video export --weights CKPT --format onnx|pt2 --mode clip|stream --out DIR [--config CFG] [--opts ...]
                      [--frames T] [--batch B] [--tolerance 1e-4] [--opset 18]

clip: frames [B, T, 3, H, W] (float, normalised as the test path) → logits [B, C], the frozen backbone, side
network and head in one graph with a dynamic batch axis. stream: one frame [1, 3, H, W] and the state tensors →
scores [1, C] and the new state (a causal model, side4video.streaming). Writes DIR/model.onnx or DIR/model.pt2 and
DIR/model.json (inputs, outputs, state, input size, mean/std, classes, exporter, measured difference). The export
runs in fp32 on the CPU; the exported graph is run on a real input and compared with the eager model, and an
export above the tolerance fails (exit status 1) without writing anything.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..engine.distributed import prepare_accelerator_env
from ..export import DEFAULT_OPSET, DEFAULT_TOLERANCE, FORMATS, MODES, export_checkpoint
from .common import add_config_arguments, positive_int, run_command


def non_negative_float(text: str) -> float:
    """argparse type: a float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="trained checkpoint; its stored config is used when "
                                                         "--config is left out")
    add_config_arguments(parser, required=False)
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="onnx (onnxruntime; needs pip install 'side4video[export]') or pt2 (torch.export)")
    parser.add_argument("--mode", default="clip", choices=MODES,
                        help="clip: a whole clip → logits (default); stream: one frame + state → scores + state")
    parser.add_argument("--out", required=True, help="output folder (model.onnx | model.pt2, model.json)")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="frames per clip T (clip mode) or in the scored window (stream mode) "
                             "(default: data.num_segments x data.seg_length)")
    parser.add_argument("--batch", type=positive_int, default=2,
                        help="clip mode: clips in the validation input (default: 2; batch 1 is checked too)")
    parser.add_argument("--tolerance", type=non_negative_float, default=DEFAULT_TOLERANCE,
                        help=f"largest |exported - eager| accepted on the logits/scores (default: {DEFAULT_TOLERANCE})")
    parser.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                        help=f"ONNX opset (default: {DEFAULT_OPSET})")
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args))


def _run(args) -> int:
    prepare_accelerator_env()  # checkpoint loading imports DeepSpeed, which warns when it must guess the device
    result = export_checkpoint(args.weights, args.out, fmt=args.format, mode=args.mode, config=args.config,
                               opts=args.opts, frames=args.frames, batch=args.batch, tolerance=args.tolerance,
                               opset=args.opset, log=lambda line: print(line, file=sys.stderr))
    meta = result.metadata
    print(f"wrote {result.path} and {result.metadata_path} ({meta['exporter']} exporter); "
          f"max |exported - eager| = {result.max_difference:.3g} (tolerance {args.tolerance:.3g}, "
          f"{meta['validation']['inputs']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
