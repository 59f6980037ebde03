"""side4video stream: a video file and a frame folder streamed frame by frame (text and JSON lines), the annotated
video, Ctrl-C, and an unreadable source as one line."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from side4video.errors import DataError
from side4video.streaming import StreamingRecognizer
from side4video.streaming.runner import run_stream
from side4video.streaming.sources import FrameSource, open_source
from side4video.tools import stream
from tests.streaming.test_streaming import write_checkpoint
from tests.support import build_workspace


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_a_video_file_streamed_as_json_lines_with_an_annotated_copy(tmp_path, capsys):
    ws = build_workspace(tmp_path.parent / "streaming_ws")
    video = Path(ws.toy["videos_root"]) / "val" / "00001.mp4"
    weights = write_checkpoint(tmp_path, "conv")
    out = tmp_path / "annotated.mp4"
    assert stream.main([str(video), "--weights", weights, "--json", "--stride", "2", "--topk", "3",
                        "--out", str(out)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    frames = decoded(video)                                      # 12 frames
    assert [line["frame"] for line in lines] == list(range(0, len(frames), 2))
    assert all(len(line["topk"]) == 3 and line["latency_ms"] > 0 for line in lines)
    # the printed probabilities are the recognizer's on the same frames
    recognizer = StreamingRecognizer.from_checkpoint(weights, stride=2)
    offline = recognizer.forward_offline(frames).softmax(dim=-1)
    for line, probs in zip(lines, offline):
        best = probs.argmax().item()
        assert line["topk"][0]["class_id"] == best
        assert line["topk"][0]["prob"] == pytest.approx(probs[best].item(), abs=1e-4)
    written = decoded(out)
    assert written.shape == frames.shape                         # every frame written, caption drawn on top
    assert np.abs(written[:, 30:].astype(int) - frames[:, 30:].astype(int)).mean() < 8


def test_a_frame_folder_streams_in_text_mode(tmp_path, capsys):
    ws = build_workspace(tmp_path.parent / "streaming_ws")
    folder = Path(ws.toy["frames_root"]) / "val" / "00002"
    assert stream.main([str(folder), "--weights", write_checkpoint(tmp_path, "conv"), "--stride", "1",
                        "--max_frames", "5"]) == 0
    captured = capsys.readouterr()
    assert len([line for line in captured.out.splitlines() if line.startswith("frame")]) == 5
    assert "done: 5 frames read, 5 processed" in captured.err


def test_ctrl_c_ends_the_stream_cleanly_and_closes_the_video(tmp_path):
    recognizer = StreamingRecognizer.from_checkpoint(write_checkpoint(tmp_path, "conv"), stride=1)

    def frames():
        for index in range(4):
            yield index, index / 30, np.full((48, 64, 3), 60 * index, dtype=np.uint8)
        raise KeyboardInterrupt
    out = tmp_path / "partial.mp4"
    lines: list[str] = []
    summary = run_stream(recognizer, FrameSource(frames(), 30.0, "test"), out=out, emit=lines.append)
    assert summary["interrupted"] and summary["frames_processed"] == 4 and len(lines) == 4
    assert decoded(out).shape[0] == 4                            # playable: the encoder was flushed


@pytest.mark.parametrize("source, message", [
    ("no/such/video.mp4", "no such video file, frame folder or camera"),
    ("rtsp://127.0.0.1:1/none", "cannot open rtsp://127.0.0.1:1/none"),
])
def test_an_unreadable_source_is_one_line(tmp_path, capsys, source, message):
    assert stream.main([source, "--weights", write_checkpoint(tmp_path, "conv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_corrupt_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(DataError, match=f"cannot open {bad}") as info:
        open_source(str(bad))
    assert "\n" not in str(info.value)
