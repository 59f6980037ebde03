"""Tiny backbones for the demo and the tests: seeded random weights for an open_clip-style JSON config, written in
a real weight-file format so that they load through exactly the path real CLIP weights take."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from ..files import atomic_save, atomic_write
from .factory import create_open_clip_model

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# The tiny open_clip config shipped with the package (4 layers, width 64, patch 8, 64 px) that the toy configs use.
TINY_CLIP_CONFIG = ASSETS / "tiny_clip.json"


def make_tiny_backbone(config: str | Path, out: str | Path, *, seed: int = 0) -> Path:
    """Random open_clip weights for ``config`` written to ``out`` (``.safetensors``, or a ``.pt/.pth/.bin``
    state dict). Skips the work if ``out`` exists."""
    out = Path(out)
    if out.is_file():
        return out
    torch.manual_seed(seed)
    model = create_open_clip_model(json.loads(Path(config).read_text()))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if out.suffix == ".safetensors":
        atomic_write(out, lambda handle: handle.write(safetensors_bytes(state)))
    else:
        atomic_save(state, out)
    return out


__all__ = ["TINY_CLIP_CONFIG", "make_tiny_backbone"]
