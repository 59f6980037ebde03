"""Frame extraction (side4video.prep.frames, run as datasets/extract_frames.py) on two tiny generated mp4 files:
frame counts, file names, short-side size, fps resampling, frames lists, resuming after an interrupted run, and
corrupt videos."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from side4video.prep import frames as ef
from side4video.prep.cli import extract_frames_main
from side4video.prep.listio import DONE_DIR, TMP_DIR, read_label_csv, read_marker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def videos(tmp_path: Path, video_factory) -> Path:
    """src/jumping/clip one.mp4 (10 frames) and src/running/b.mp4 (12 frames), both 64x48 at 10 fps."""
    src = tmp_path / "src"
    video_factory(src / "jumping" / "clip one.mp4", num_frames=10)
    video_factory(src / "running" / "b.mp4", num_frames=12)
    return src


def frame_names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def run(args: list[str], capsys) -> str:
    assert extract_frames_main([str(a) for a in args]) == 0
    return capsys.readouterr().out


def test_extracts_frames_with_template_and_short_side(tmp_path, videos, capsys):
    dst = tmp_path / "frames"
    out = run([videos, dst, "--tmpl", "{:06d}.jpg", "--short_side", "24", "--workers", "2",
               "--list_out", tmp_path / "lists" / "train.txt", "--labels_from_dirs"], capsys)
    assert "extracted 2, already done 0, failed 0 of 2" in out

    # whitespace in the relative path becomes '_' so the folder can appear in a space-separated list
    a, b = dst / "jumping" / "clip_one", dst / "running" / "b"
    assert frame_names(a) == [f"{i:06d}.jpg" for i in range(1, 11)]
    assert frame_names(b) == [f"{i:06d}.jpg" for i in range(1, 13)]
    with Image.open(a / "000001.jpg") as img:
        assert img.size == (32, 24)            # 64x48 -> short side 24, aspect kept
        assert img.format == "JPEG"
    # markers sit outside the frame folders, so os.listdir(folder) counts frames only
    assert read_marker(dst, "jumping/clip_one") == 10 and read_marker(dst, "running/b") == 12
    assert not (dst / TMP_DIR).exists() and not (dst / "failed.txt").exists()

    assert (tmp_path / "lists" / "train.txt").read_text().splitlines() == ["jumping/clip_one 10 0", "running/b 12 1"]
    assert read_label_csv(tmp_path / "lists" / "labels.csv") == ["jumping", "running"]


def test_keeps_size_by_default_and_resamples_fps(tmp_path, videos, capsys):
    dst = tmp_path / "frames"
    run([videos, dst, "--fps", "5", "--workers", "1"], capsys)
    assert frame_names(dst / "running" / "b") == [f"img_{i:05d}.jpg" for i in range(1, 7)]   # 1.2 s at 5 fps
    assert len(frame_names(dst / "jumping" / "clip_one")) == 5
    with Image.open(dst / "running" / "b" / "img_00001.jpg") as img:
        assert img.size == (64, 48)

    up = tmp_path / "up"
    run([videos, up, "--fps", "20", "--workers", "1"], capsys)
    assert len(frame_names(up / "jumping" / "clip_one")) == 19   # frames at 0, 0.05, ..., 0.9 s


def test_webm_vp9_with_ssv2_template(tmp_path, capsys):
    """SSv2 ships VP9 .webm files; frames are named {:06d}.jpg."""
    import av
    import numpy as np

    src = tmp_path / "ssv2"
    src.mkdir()
    with av.open(str(src / "74225.webm"), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=12)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(7):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((64, 96, 3), 30 * i, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    dst = tmp_path / "frames"
    run([src, dst, "--tmpl", "{:06d}.jpg", "--short_side", "32", "--workers", "1"], capsys)
    assert frame_names(dst / "74225") == [f"{i:06d}.jpg" for i in range(1, 8)]
    with Image.open(dst / "74225" / "000001.jpg") as img:
        assert img.size == (48, 32)


def test_resume_redoes_unfinished_and_skips_finished(tmp_path, videos, capsys):
    dst = tmp_path / "frames"
    run([videos, dst, "--workers", "1"], capsys)
    b_first = (dst / "running" / "b" / "img_00001.jpg").stat().st_mtime_ns

    # simulate a run killed half-way: clip_one's folder is partial and has no marker, scratch is left over
    (dst / DONE_DIR / "jumping" / "clip_one.done").unlink()
    for i in range(6, 11):
        (dst / "jumping" / "clip_one" / f"img_{i:05d}.jpg").unlink()
    (dst / TMP_DIR / "leftover").mkdir(parents=True)

    out = run([videos, dst, "--workers", "1"], capsys)
    assert "extracted 1, already done 1, failed 0 of 2" in out
    assert len(frame_names(dst / "jumping" / "clip_one")) == 10
    assert read_marker(dst, "jumping/clip_one") == 10
    assert (dst / "running" / "b" / "img_00001.jpg").stat().st_mtime_ns == b_first   # untouched
    assert not (dst / TMP_DIR).exists()

    # a marker whose count no longer matches the folder (frames deleted by hand) is not trusted either
    (dst / "running" / "b" / "img_00012.jpg").unlink()
    out = run([videos, dst, "--workers", "1"], capsys)
    assert "extracted 1, already done 1" in out
    assert len(frame_names(dst / "running" / "b")) == 12


def test_corrupt_video_is_reported_and_others_finish(tmp_path, videos, capsys):
    (videos / "running" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (videos / "running" / "empty.avi").write_bytes(b"")
    dst = tmp_path / "frames"
    lst = tmp_path / "train.txt"
    out = run([videos, dst, "--workers", "2", "--list_out", lst, "--labels_from_dirs"], capsys)
    assert "extracted 2, already done 0, failed 2 of 4" in out

    failed = dict(line.split("\t", 1) for line in (dst / "failed.txt").read_text().splitlines())
    assert set(failed) == {str((videos / "running" / "broken.mp4").resolve()),
                           str((videos / "running" / "empty.avi").resolve())}
    assert all(why.startswith("pyav: ") and "decord: " in why for why in failed.values())
    assert not (dst / "running" / "broken").exists() and not (dst / "running" / "empty").exists()
    assert lst.read_text().splitlines() == ["jumping/clip_one 10 0", "running/b 12 1"]

    # once the bad files are gone a re-run succeeds and removes the stale failed.txt
    (videos / "running" / "broken.mp4").unlink()
    (videos / "running" / "empty.avi").unlink()
    out = run([videos, dst, "--workers", "1"], capsys)
    assert "extracted 0, already done 2, failed 0 of 2" in out
    assert not (dst / "failed.txt").exists()


def test_decoder_crash_is_isolated(tmp_path, videos, capsys, monkeypatch):
    """A video that kills its worker process (e.g. a decoder segfault) is reported; the run goes on."""
    real_decode = ef.decode_pyav

    def crashing_decode(src, writer):
        if src.endswith("b.mp4"):
            os.kill(os.getpid(), signal.SIGKILL)
        real_decode(src, writer)

    monkeypatch.setattr(ef, "decode_pyav", crashing_decode)    # inherited by the forked workers
    dst = tmp_path / "frames"
    out = run([videos, dst, "--workers", "2"], capsys)
    assert "extracted 1, already done 0, failed 1 of 2" in out
    assert len(frame_names(dst / "jumping" / "clip_one")) == 10
    assert (dst / "failed.txt").read_text() == f"{(videos / 'running' / 'b.mp4').resolve()}\t{ef.CRASH_REASON}\n"


def test_video_list_source_with_labels_and_decord_backend(tmp_path, videos, capsys):
    src_list = tmp_path / "videos.txt"
    src_list.write_text("# my subset\nrunning/b.mp4 7\n")
    dst = tmp_path / "frames"
    run([src_list, dst, "--video_root", videos, "--backend", "decord", "--workers", "1",
         "--list_out", tmp_path / "out.txt"], capsys)
    assert len(frame_names(dst / "running" / "b")) == 12
    assert (tmp_path / "out.txt").read_text().splitlines() == ["running/b 12 7"]


def test_malformed_source_list_names_file_and_line(tmp_path, videos, capsys):
    src_list = tmp_path / "videos.txt"
    src_list.write_text("running/b.mp4 1\njumping/clip.mp4 one\n")
    assert extract_frames_main([str(src_list), str(tmp_path / "f"), "--video_root", str(videos)]) == 2
    assert f"{src_list}:2: label 'one' is not an integer" in capsys.readouterr().err


def test_cli_help():
    r = subprocess.run([sys.executable, str(REPO / "datasets" / "extract_frames.py"), "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "--short_side" in r.stdout and "--labels_from_dirs" in r.stdout
