"""Write seeded random weights for an open_clip-style JSON config, in a real weight-file format.

The demo and the tests use it to get a small backbone file that loads through exactly the code path
real CLIP weights take (``network.pretrained: path``)::

    side4video make-tiny-backbone side4video/assets/tiny_clip.json toy_data/tiny_clip.safetensors
"""
from __future__ import annotations

import argparse
from typing import Sequence

from ..backbones.tiny import make_tiny_backbone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="side4video make-tiny-backbone", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="open_clip-style JSON model config")
    parser.add_argument("out", help="weight file to write (.safetensors, .pt, .pth, .bin)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_tiny_backbone(args.config, args.out, seed=args.seed)
    print(f"backbone weights: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
