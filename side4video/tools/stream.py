"""Online recognition of a live stream with a causal side network, frame by frame.

    side4video stream SOURCE --weights CKPT [--config CFG.yaml] [--opts ...] [--topk 5] [--stride N]
                             [--window T] [--smoothing S] [--json] [--out annotated.mp4] [--max_frames N]

SOURCE is a video file, a frame folder, a camera (``/dev/video0`` or ``0``) or an RTSP/HTTP URL (PyAV). Every
stride-th frame (default: the spacing the model was trained with) goes through the frozen backbone and the causal
side network's per-frame step; the top-k of the window of the last T processed frames is printed per processed
frame (``--json``: one JSON object per line with frame, time, topk, latency_ms). ``--out`` writes the video with
the current label and probability drawn on it. Ctrl-C ends the stream cleanly (exit 0, a summary on stderr).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Sequence

from ..engine.distributed import prepare_accelerator_env
from ..streaming import StreamingRecognizer
from ..streaming.runner import run_stream
from ..streaming.sources import open_source
from .common import add_config_arguments, default_device, positive_int, run_command, stdout_to_stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video stream", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", metavar="SOURCE", help="video file, frame folder, camera (/dev/video0 or 0) or "
                                                         "rtsp:// / http:// URL")
    add_config_arguments(parser, required=False)
    parser.add_argument("--weights", required=True, help="checkpoint of a causal side network (network.causal)")
    parser.add_argument("--topk", type=positive_int, default=5, help="classes shown per frame (default: 5)")
    parser.add_argument("--stride", type=positive_int, default=None,
                        help="process every N-th frame (default: the frame spacing of training: data.sampling_rate "
                             "for dense sampling, else the median training video length / T)")
    parser.add_argument("--window", type=positive_int, default=None,
                        help="frames averaged by the head (default: the model's frames per clip)")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="exponential smoothing of the shown probabilities, in [0, 1) (default: 0, none)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of a frame folder (default: 30)")
    parser.add_argument("--max_frames", type=positive_int, default=None, help="stop after this many frames")
    parser.add_argument("--json", action="store_true", help="one JSON object per processed frame on stdout")
    parser.add_argument("--out", default=None, help="write the annotated video here (.mp4)")
    args = parser.parse_args(argv)
    return run_command(lambda: _run(args), code=2)


def _run(args) -> int:
    with stdout_to_stderr() if args.json else contextlib.nullcontext():
        prepare_accelerator_env()
        recognizer = StreamingRecognizer.from_checkpoint(
            args.weights, config=args.config, opts=args.opts, device=default_device(), window=args.window,
            stride=args.stride, smoothing=args.smoothing)
        source = open_source(args.source, folder_fps=args.fps)
    summary = run_stream(recognizer, source, topk=args.topk, as_json=args.json, out=args.out,
                         max_frames=args.max_frames, emit=lambda line: print(line, flush=True))
    state = "interrupted" if summary["interrupted"] else "done"
    latency = summary["mean_latency_ms"]
    print(f"{state}: {summary['frames_read']} frames read, {summary['frames_processed']} processed (stride "
          f"{recognizer.stride}, window {recognizer.step.window})"
          + (f", {latency:.1f} ms per processed frame" if latency is not None else "")
          + (f"; annotated video: {summary['annotated']}" if summary["annotated"] else ""), file=sys.stderr)
    if args.json:
        print(json.dumps({"summary": summary}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
