"""The ``side4video`` console script: one command with subcommands, each a thin module of ``side4video.tools``
(or ``side4video.prep``) with a ``main(argv)``::

    side4video train --config CFG.yaml            side4video test --weights run/checkpoints/best.pt
    side4video predict VIDEO --weights CKPT       side4video extract --config CFG --list LIST --root DIR --out OUT
    side4video ablation --config ABLATION.yaml    side4video check-videos LIST --root DIR
    side4video fuse A.npz B.npz                   side4video convert CKPT --config CFG --out OUT
    side4video prep kinetics ...                  side4video demo

``python train.py`` / ``python test.py`` and ``scripts/*.sh`` run the same code.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from .registry import hint

# subcommand → (module with main(argv), one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("side4video.tools.train", "train a side network or a baseline head on a frozen backbone"),
    "test": ("side4video.tools.test", "multi-view testing of a checkpoint (results.json, scores.npz)"),
    "predict": ("side4video.tools.predict", "top-k classes of videos or frame folders"),
    "stream": ("side4video.tools.stream", "online recognition of a video, frame folder, camera or URL, frame by frame"),
    "extract": ("side4video.tools.extract_features", "frozen-backbone features of a list, in resumable shards"),
    "ablation": ("side4video.tools.ablation", "side modules side by side on one frozen-backbone pass"),
    "check-videos": ("side4video.tools.check_videos", "find unreadable videos and frame folders of a list"),
    "fuse": ("side4video.tools.fuse_scores", "fuse the scores of several test runs"),
    "convert": ("side4video.tools.convert_official", "convert an official Side4Video checkpoint"),
    "prep": ("side4video.prep.cli", "dataset preparation: annotation lists, frame extraction, shards"),
    "baselines": ("side4video.tools.feature_baselines", "linear probes over extracted features"),
    "demo": ("side4video.tools.demo", "the CPU demo on the toy dataset"),
    "toy-data": ("side4video.data.toy", "write the toy temporal dataset"),
    "make-tiny-backbone": ("side4video.tools.make_tiny_backbone", "random weights for a tiny backbone config"),
    "extract-retrieval": ("side4video.tools.retrieval_index", "retrieval: video and caption embeddings of a "
                                                               "checkpoint (resumable), and evaluation from them"),
    "search": ("side4video.tools.search", "retrieval: the videos of an extracted index that best match a text"),
    "retrieval-data": ("side4video.retrieval.toy", "write the toy text-video retrieval dataset (MSR-VTT layout)"),
    "export": ("side4video.tools.export", "a checkpoint as one ONNX or torch.export graph (clip or stream), validated"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: side4video COMMAND [arguments]   (side4video COMMAND --help for its arguments)", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'{hint(name, COMMANDS, 'commands')}", file=sys.stderr)
        return 2
    # the chosen command's module only: each imports torch and its own parts, which take seconds
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
