"""Unreadable inputs: training replaces and reports them, evaluation marks them invalid."""
import logging
import os
import re

import av
import pytest
import torch

from side4video.data import BadSampleTracker, TooManyUnreadableInputs, create_dataset, create_loader
from side4video.data import dataset as dataset_module
from side4video.data.decoders import DecordReader, PyAVReader, VideoReadError
from side4video.data.toy import write_frame_folder, write_video
from side4video.errors import DataError
from tests.support import PNG_TMPL, coded_frames, make_data_cfg, write_list


@pytest.fixture(scope="module")
def broken_videos(tmp_path_factory):
    """One good mp4 and each kind of broken one; returns (root, {name: expected reason fragment})."""
    root = tmp_path_factory.mktemp("broken_videos")
    write_video(str(root / "good.mp4"), coded_frames(16))
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[:len(data) // 2])
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    # index at the front (faststart): opens fine, fails while decoding
    with av.open(str(root / "good.mp4")) as source, \
            av.open(str(root / "front.mp4"), "w", options={"movflags": "faststart"}) as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = (root / "front.mp4").read_bytes()
    (root / "truncated_front.mp4").write_bytes(data[:len(data) // 2])
    os.remove(root / "front.mp4")
    reasons = {"truncated.mp4": "cannot open video",
               "truncated_front.mp4": "cannot open video|decoding failed|stream ended",
               "empty.mp4": "empty file", "text.mp4": "cannot open video", "missing.mp4": "file not found"}
    return root, reasons


@pytest.fixture(scope="module")
def broken_frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken_frames")
    write_frame_folder(str(root / "good"), coded_frames(10), image_tmpl=PNG_TMPL)
    write_frame_folder(str(root / "short"), coded_frames(6), image_tmpl=PNG_TMPL)
    os.makedirs(root / "empty")
    write_frame_folder(str(root / "hole"), coded_frames(10), image_tmpl=PNG_TMPL)
    for i in range(2, 10):  # keep the first and last frame: the cheap check passes, decoding does not
        os.remove(root / "hole" / PNG_TMPL.format(i))
    lines = {"good 10 0": None, "short 10 1": "list says 10 frames, the folder holds 6",
             "empty 10 2": "frame folder is empty", "gone 10 0": "frame folder not found",
             "hole 10 1": ".png missing"}
    return root, lines


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_backends_read_a_valid_mp4_alike(broken_videos, backend):
    root, _ = broken_videos
    reader_type = DecordReader if backend == "decord" else PyAVReader
    with reader_type(str(root / "good.mp4")) as reader:
        assert reader.num_frames == 16
        frames = reader.read([3, 0, 15, 3])
    assert frames.shape == (4, 3, 48, 64) and frames.dtype == torch.uint8
    expected = torch.from_numpy(coded_frames(16)[[3, 0, 15, 3]]).permute(0, 3, 1, 2)
    assert (frames.float() - expected.float()).abs().mean() < 4  # lossy, but the right frames in the right order
    assert torch.equal(frames[0], frames[3])


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_each_broken_video_gets_its_reason(broken_videos, backend):
    root, reasons = broken_videos
    reader_type = DecordReader if backend == "decord" else PyAVReader
    for name, reason in reasons.items():
        with pytest.raises(VideoReadError, match=reason) as error:
            with reader_type(str(root / name)) as reader:
                reader.read(range(reader.num_frames))
        assert error.value.path == str(root / name)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_training_replaces_broken_videos_and_reports_them(tmp_path, broken_videos, backend, caplog, monkeypatch):
    monkeypatch.setattr(dataset_module, "_bad_input_log", dataset_module._BadInputLog())  # fresh rate limit
    root, reasons = broken_videos
    names = list(reasons)
    list_file = write_list(tmp_path / "train.txt", [f"{name} 1" for name in names] + ["good.mp4 2"])
    cfg = make_data_cfg(train_root=str(root), train_list=list_file, video_backend=backend, max_retries=10)
    ds = create_dataset(cfg, "train")
    with caplog.at_level(logging.WARNING, logger="side4video.data.dataset"):
        samples = [ds[i] for i in range(len(names))]
    for name, sample in zip(names, samples):
        assert sample["valid"] and sample["video_id"] == "good.mp4" and sample["label"].tolist() == [2]
        assert sample["frames"].shape == (1, 4, 3, 32, 32)
        assert any(p == str(root / name) and re.search(reasons[name], r) for p, r in sample["errors"])
        assert name in caplog.text
    assert ds[len(names)]["errors"] == []
    # the replacement is deterministic
    assert torch.equal(ds[0]["frames"], samples[0]["frames"])


def test_training_gives_up_after_max_retries(tmp_path, broken_videos):
    root, _ = broken_videos
    list_file = write_list(tmp_path / "train.txt", ["empty.mp4 0", "text.mp4 1"])
    ds = create_dataset(make_data_cfg(train_root=str(root), train_list=list_file, max_retries=3), "train")
    with pytest.raises(TooManyUnreadableInputs, match=r"3 replacements are all unreadable.*empty.mp4.*text.mp4") \
            as error:
        ds[0]
    assert isinstance(error.value, DataError) and isinstance(error.value, RuntimeError)  # RuntimeError as before
    assert "data.max_retries=3" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_evaluation_marks_broken_videos_invalid(tmp_path, broken_videos, backend):
    root, reasons = broken_videos
    list_file = write_list(tmp_path / "val.txt", ["good.mp4 0"] + [f"{name} 1" for name in reasons])
    cfg = make_data_cfg(val_root=str(root), val_list=list_file, video_backend=backend)
    ds = create_dataset(cfg, "test", test_crops=3, test_clips=2)
    batch = next(iter(create_loader(ds, batch_size=len(ds))))
    bad = len(reasons)
    assert batch["frames"].shape == (1 + bad, 6, 4, 3, 32, 32)
    assert batch["valid"].tolist() == [True] + [False] * bad
    assert batch["label"].tolist() == [0] + [1] * bad
    assert batch["frames"][1:].eq(0).all() and batch["frames"][0].gt(0).any()
    assert [os.path.basename(p) for p, _ in batch["errors"]] == list(reasons)
    for path, reason in batch["errors"]:
        assert re.search(reasons[os.path.basename(path)], reason), reason


def test_broken_frame_folders(tmp_path, broken_frames):
    root, lines = broken_frames
    list_file = write_list(tmp_path / "list.txt", list(lines))
    cfg = make_data_cfg(train_root=str(root), train_list=list_file, val_root=str(root), val_list=list_file,
                        max_retries=10)
    val = create_dataset(cfg, "val")
    train = create_dataset(cfg, "train")
    for index, reason in enumerate(lines.values()):
        sample = val[index]
        assert sample["valid"] == (reason is None)
        if reason is not None:
            assert len(sample["errors"]) == 1 and reason in sample["errors"][0][1]
            replaced = train[index]
            assert replaced["video_id"] == "good" and any(reason in r for _, r in replaced["errors"])


def test_bad_sample_tracker():
    tracker = BadSampleTracker()
    tracker.add([], 90)
    tracker.add([("a.mp4", "empty file (0 bytes)"), ("b.mp4", "file not found")], 10)
    tracker.add([("a.mp4", "empty file (0 bytes)")], 0)
    assert (tracker.num_samples, tracker.num_errors) == (100, 3) and tracker.fraction == pytest.approx(0.03)
    summary = tracker.summary()
    assert summary.startswith("3 unreadable inputs for 100 samples (3.00%)")
    assert "a.mp4: empty file (0 bytes) (x2)" in summary
    tracker.check(0.05)
    with pytest.raises(TooManyUnreadableInputs, match=r"exceeds data.max_bad_fraction=0.01.*check_videos") as error:
        tracker.check(0.01)
    assert isinstance(error.value, DataError) and "\n" not in str(error.value)
    assert "e.g. a.mp4: empty file (0 bytes) (x2); b.mp4: file not found" in str(error.value)
