"""Shared inputs of the inference/feature tool tests, built once per test session.

A small toy dataset (frames and videos), tiny CLIP weights with a text tower written as safetensors, a
freshly initialised side-network checkpoint in the engine's format, and a config that points at them.
"""
from __future__ import annotations

import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import child_env

REPO = Path(__file__).resolve().parents[2]
TINY_CLIP_JSON = REPO / "side4video" / "assets" / "tiny_clip.json"

_BUILT: dict[str, "Workspace"] = {}


@dataclass
class Workspace:
    root: Path
    toy: dict            # generate_toy_dataset's paths
    config: Path         # YAML config (tiny CLIP, toy data, workers 0)
    weights: Path        # backbone weights, text tower included
    checkpoint: Path     # trainable side network, engine checkpoint format

    def load_config(self, *opts: str):
        from side4video.config import load_config
        return load_config(str(self.config), list(opts))


def _write_config(path: Path, toy: dict, weights: Path) -> None:
    path.write_text(f"""seed: 1024
data:
    dataset: toy
    num_segments: 8
    seg_length: 1
    batch_size: 4
    workers: 0
    num_classes: 8
    image_tmpl: '{{:05d}}.jpg'
    train_root: {toy['frames_root']}
    train_list: {toy['train_frames_list']}
    val_root: {toy['frames_root']}
    val_list: {toy['val_frames_list']}
    label_list: {toy['label_list']}
    input_size: 64
    scale_size: [64, 80]
network:
    arch: {TINY_CLIP_JSON}
    pretrained: {weights}
    head: side4video
    side_dim: 32
solver:
    precision: fp32
""")


def _write_checkpoint(ws_config: Path, path: Path) -> None:
    import torch

    from side4video.backbones import backbone_identity
    from side4video.config import load_config
    from side4video.engine.builders import backbone_from_config, model_from_config
    from side4video.engine.checkpoint import FORMAT
    cfg = load_config(str(ws_config))
    backbone = backbone_from_config(cfg)
    model = model_from_config(cfg, backbone, seed=0)
    # a classifier that is not near-uniform makes prediction comparisons meaningful
    classifier = [param for param in model.parameters() if param.dim() == 2][-1]
    with torch.no_grad():
        classifier.mul_(20)
    torch.save({"format": FORMAT, "epoch": 0, "model": model.state_dict(), "backbone": backbone_identity(backbone),
                "head": cfg.network.head, "num_classes": cfg.data.num_classes}, path)


def build_workspace(base: Path) -> Workspace:
    """Build (once per session) everything the tool tests share."""
    if "ws" in _BUILT:
        return _BUILT["ws"]
    from side4video.data.toy import generate_toy_dataset
    from side4video.backbones.tiny import make_tiny_backbone
    base.mkdir(parents=True, exist_ok=True)
    toy = generate_toy_dataset(str(base / "toy"), train_per_class=2, val_per_class=1, frames=12,
                               formats=("frames", "videos"), workers=1)
    weights = make_tiny_backbone(TINY_CLIP_JSON, base / "tiny_clip.safetensors")
    config = base / "tiny.yaml"
    _write_config(config, toy, weights)
    checkpoint = base / "side_network.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _write_checkpoint(config, checkpoint)
    _BUILT["ws"] = Workspace(base, toy, config, weights, checkpoint)
    return _BUILT["ws"]


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    return build_workspace(tmp_path_factory.getbasetemp() / "tools_workspace")


def run_module(module: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh process (for crash/resume tests), from the repository root."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=child_env(**(env or {})), capture_output=True,
                          text=True, timeout=120)
