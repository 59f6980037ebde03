"""Helpers shared by the data tests (imported as a plain module: tests/ is not a package)."""
from __future__ import annotations

import numpy as np
from dotmap import DotMap

from side4video.config import config_section

PNG_TMPL = "{:05d}.png"  # lossless frames: tests can read exact pixel values back


def coded_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames [F, H, W, 3] whose pixels say where they come from: R = 4x, G = 10 * frame index, B = 4y."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    frames[..., 0] = (4 * x) % 256
    frames[..., 2] = (4 * y) % 256
    frames[..., 1] = (10 * np.arange(num_frames) % 256)[:, None, None]
    return frames


def write_list(path, lines) -> str:
    with open(path, "w") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return str(path)


def make_data_cfg(**overrides) -> DotMap:
    """A validated data section (schema defaults + these values); grayscale off unless a test asks for it."""
    cfg = dict(num_classes=3, num_segments=4, input_size=32, scale_size=40, image_tmpl=PNG_TMPL,
               train_crop="random_resized", flip=True, max_retries=3, grayscale=0.0)
    cfg.update(overrides)
    return config_section("data", cfg)


def override(cfg: DotMap, **changes) -> DotMap:
    """A validated copy of ``cfg`` with some keys changed."""
    return config_section("data", {**cfg.toDict(), **changes})
