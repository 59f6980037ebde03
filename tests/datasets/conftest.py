"""Shared helpers for the dataset-preparation tests (``side4video.prep`` and the ``datasets/`` scripts)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATASETS_DIR = REPO / "datasets"
LABELS_DIR = DATASETS_DIR / "labels"


def make_video(path: Path, num_frames: int = 10, width: int = 64, height: int = 48, rate: int = 10) -> Path:
    """Encode a tiny MPEG-4 video with PyAV: frame i is a flat grey of level 20*i."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            img = np.full((height, width, 3), (20 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_frames(folder: Path, n: int, tmpl: str) -> Path:
    """A fake extracted-frames folder: ``n`` empty files named by the template (only names are counted)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / tmpl.format(i)).touch()
    return folder


@pytest.fixture
def video_factory():
    """``video_factory(path, num_frames=10, width=64, height=48, rate=10)`` writes a tiny mp4."""
    return make_video


@pytest.fixture
def frames_factory():
    """``frames_factory(folder, n, tmpl)`` writes ``n`` empty frame files named by ``tmpl``."""
    return make_frames
