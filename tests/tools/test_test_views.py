"""test.py says when the protocol's name promises more than it scored: views that coincide (more clips than a short
video has positions) and dense windows that take frames out of order; results.json records both."""
from __future__ import annotations

import json

from side4video.tools import test as test_command


def _test(workspace, tmp_path, name: str, *args: str) -> dict:
    assert test_command.main(["--config", str(workspace.config), "--weights", str(workspace.checkpoint), "--output",
                      str(tmp_path / name), *args]) == 0
    return json.loads((tmp_path / name / "results.json").read_text())


def test_repeated_views_and_frames_out_of_order_are_said_and_recorded(workspace, tmp_path, capsys):
    # 12-frame toy videos, T = 8: the kinetics rule has few distinct positions for 6 clips
    results = _test(workspace, tmp_path, "clips", "--test_clips", "6")
    views = results["views"]
    assert views["requested"] == 6 and views["videos_with_repeated_views"] == results["num_videos"]
    assert views["distinct_min"] < 6
    assert f"had only {views['distinct_min']} distinct views of the 6 requested" in capsys.readouterr().out
    # the reference's dense window (128 frames) wraps around 12-frame videos: frames out of order, said with the fix
    dense = _test(workspace, tmp_path, "dense", "--dense", "--test_clips", "2")
    assert dense["out_of_order_videos"] == dense["num_videos"] and dense["data"]["dense"]
    out = capsys.readouterr().out
    assert "takes their frames out of order" in out and "data.dense_window: adaptive" in out
    adaptive = _test(workspace, tmp_path, "adaptive", "--dense", "--test_clips", "2", "--opts",
                     "data.dense_window=adaptive")
    assert adaptive["out_of_order_videos"] == 0 and adaptive["views"]["videos_with_repeated_views"] == 0
