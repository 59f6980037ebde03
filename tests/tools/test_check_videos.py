"""check_videos: every bad entry is found with its reason, and the clean list keeps the good lines."""
import os
import subprocess
import sys

import numpy as np
import pytest

from side4video.data.toy import write_frame_folder, write_video
from side4video.tools.check_videos import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def frames(n, height=32, width=64):  # decord 0.6 fails on a few small widths (16, 24, 48, 72)
    return np.random.default_rng(n).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_video(str(root / "good.mp4"), frames(10))
    write_video(str(root / "good two.mp4"), frames(12))
    data = (root / "good.mp4").read_bytes()
    (root / "half.mp4").write_bytes(data[:len(data) // 2])
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video")
    return root


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_video_list(video_root, tmp_path, capsys, backend):
    lines = ["good.mp4 0", "half.mp4 1", "good two.mp4 12 2", "zero.mp4 0", "text.mp4 1", "missing.mp4 2"]
    list_file = tmp_path / "train.txt"
    list_file.write_text("\n".join(lines) + "\n")
    code = main([str(list_file), "--root", str(video_root), "--backend", backend, "--workers", "2",
                 "--no_progress"])
    out = capsys.readouterr().out
    assert code == 1
    expected = {"half.mp4 (line 2)": "cannot open video", "zero.mp4 (line 4)": "empty file (0 bytes)",
                "text.mp4 (line 5)": "cannot open video", "missing.mp4 (line 6)": "file not found"}
    reported = [line for line in out.splitlines() if line.startswith("UNREADABLE")]
    assert len(reported) == 4
    for entry, reason in expected.items():
        assert any(entry in line and reason in line for line in reported), (entry, out)
    assert "4 of 6 entries unreadable" in out
    assert (tmp_path / "train.clean.txt").read_text() == "good.mp4 0\ngood two.mp4 12 2\n"


def test_frame_list_and_custom_output(tmp_path, capsys):
    root = tmp_path / "frames"
    write_frame_folder(str(root / "ok"), frames(5), image_tmpl="img_{:05d}.jpg")
    write_frame_folder(str(root / "short"), frames(3), image_tmpl="img_{:05d}.jpg")
    write_frame_folder(str(root / "hole"), frames(5), image_tmpl="img_{:05d}.jpg")
    os.remove(root / "hole" / "img_00003.jpg")
    (root / "broken").mkdir()
    for i in range(1, 5):
        (root / "broken" / f"img_{i:05d}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    os.makedirs(root / "empty")
    list_file = tmp_path / "val.txt"
    list_file.write_text("ok 5 0\nshort 5 1\nhole 5 0\nbroken 4 1\nempty 2 0\n")
    out_file = tmp_path / "clean.txt"
    code = main([str(list_file), "--root", str(root), "--workers", "1", "--out", str(out_file), "--no_progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "short (line 2): frame file img_00005.jpg missing" in out
    assert "hole (line 3): 1 of 5 frame files missing: img_00003.jpg" in out
    assert "broken (line 4): cannot decode img_00001.jpg" in out
    assert "empty (line 5): frame folder is empty" in out
    assert out_file.read_text() == "ok 5 0\n"


def test_all_good_exits_zero_from_the_command_line(video_root, tmp_path):
    list_file = tmp_path / "good.txt"
    list_file.write_text("good.mp4 0\ngood two.mp4 1\n")
    result = subprocess.run([sys.executable, "-m", "side4video.tools.check_videos", str(list_file), "--root",
                             str(video_root), "--workers", "1"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "0 of 2 entries unreadable" in result.stdout
    assert (tmp_path / "good.clean.txt").read_text() == "good.mp4 0\ngood two.mp4 1\n"
