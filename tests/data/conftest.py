"""Tiny datasets written into temporary directories."""
from __future__ import annotations

import os

import pytest
from dotmap import DotMap

from side4video.data.toy import write_frame_folder, write_video
from tests.support import PNG_TMPL, coded_frames, make_data_cfg, write_list


@pytest.fixture(scope="session")
def frames_data(tmp_path_factory) -> DotMap:
    """Six PNG frame folders (20 coded frames, 48x64) with labels 0, 1, 2, 0, 1, 2."""
    root = tmp_path_factory.mktemp("frames_data")
    lines = []
    for i in range(6):
        write_frame_folder(str(root / f"v{i}"), coded_frames(20), image_tmpl=PNG_TMPL)
        lines.append(f"v{i} 20 {i % 3}")
    list_file = write_list(root / "list.txt", lines)
    return make_data_cfg(train_root=str(root), train_list=list_file, val_root=str(root), val_list=list_file)


@pytest.fixture(scope="session")
def videos_data(tmp_path_factory) -> DotMap:
    """Four mp4 files (16 coded frames, 48x64) with labels 0, 1, 2, 0."""
    root = tmp_path_factory.mktemp("videos_data")
    lines = []
    for i in range(4):
        write_video(os.path.join(root, f"clip {i}.mp4"), coded_frames(16))  # a space in the name on purpose
        lines.append(f"clip {i}.mp4 {i % 3}")
    list_file = write_list(root / "list.txt", lines)
    return make_data_cfg(train_root=str(root), train_list=list_file, val_root=str(root), val_list=list_file)
