"""Write seeded random weights for an open_clip-style JSON config, in a real weight-file format.

The demo and the tests use it to get a small backbone file that loads through exactly the code path
real CLIP weights take (``network.pretrained: path``)::

    python -m side4video.tools.make_tiny_backbone side4video/assets/tiny_clip.json toy_data/tiny_clip.safetensors
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import torch

# The tiny open_clip config shipped with the package (4 layers, width 64, patch 8, 64 px) that the toy configs use.
TINY_CLIP_CONFIG = Path(__file__).resolve().parents[1] / "assets" / "tiny_clip.json"


def make_tiny_backbone(config: str | Path, out: str | Path, *, seed: int = 0) -> Path:
    """Random open_clip weights for ``config`` written to ``out`` (``.safetensors``, or a ``.pt/.pth/.bin``
    state dict). Skips the work if ``out`` exists."""
    from ..backbones import build_open_clip_model
    out = Path(out)
    if out.is_file():
        return out
    torch.manual_seed(seed)
    model = build_open_clip_model(json.loads(Path(config).read_text()))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state, str(tmp))
    else:
        torch.save(state, tmp)
    tmp.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="open_clip-style JSON model config")
    parser.add_argument("out", help="weight file to write (.safetensors, .pt, .pth, .bin)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = make_tiny_backbone(args.config, args.out, seed=args.seed)
    print(f"backbone weights: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
