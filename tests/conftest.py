"""Fixtures shared by every test (helpers live in ``tests/support.py``)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from side4video.backbones.tiny import make_tiny_backbone
from side4video.data.toy import generate_toy_dataset
from tests.support import TINY_CLIP_JSON

os.environ.setdefault("DS_ACCELERATOR", "cpu")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def quiet_random_weights():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RANDOM weights.*")
        yield


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """A small toy temporal dataset (frames + videos) and a tiny backbone weight file in a real format."""
    root = tmp_path_factory.mktemp("toy")
    generate_toy_dataset(str(root), train_per_class=4, val_per_class=2, workers=1)
    make_tiny_backbone(TINY_CLIP_JSON, root / "tiny_clip.safetensors")
    return root
