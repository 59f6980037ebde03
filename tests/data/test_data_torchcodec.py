"""The optional torchcodec video backend (``data.video_backend: torchcodec``).

torchcodec is not a dependency and needs the system's FFmpeg shared libraries: the decoding tests skip,
with the reason torchcodec gives, where it cannot load (CI, machines without FFmpeg). The error path
(FFmpeg missing) is simulated and runs everywhere.
"""
import os

import av
import numpy as np
import pytest
import torch

from side4video.data import create_dataset, decoders
from side4video.data.decoders import (
    VIDEO_BACKENDS,
    PyAVReader,
    TorchCodecReader,
    VideoReadError,
    open_reader,
    torchcodec_available,
    verify_video_file,
)
from side4video.data.lists import VideoRecord
from side4video.data.toy import write_video
from side4video.errors import ConfigError
from tests.support import coded_frames, override

NUM_FRAMES = 16


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A good mp4 (mpeg4 and H.264, 16 coded frames, 48x64) and broken ones; (root, {name: reason pattern})."""
    root = tmp_path_factory.mktemp("torchcodec_videos")
    write_video(str(root / "good.mp4"), coded_frames(NUM_FRAMES))
    write_video(str(root / "h264.mp4"), coded_frames(NUM_FRAMES), codec="libx264")
    data = (root / "good.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[:len(data) // 2])  # the index (moov) is at the end: gone
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    os.makedirs(root / "folder.mp4")
    # index at the front (faststart), data cut in half: opens, but half of the frames are missing
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
               "truncated_front.mp4": "stream ended after 4 of 16 frames|cannot open video|decoding failed",
               "empty.mp4": "empty file", "text.mp4": "cannot open video", "missing.mp4": "file not found",
               "folder.mp4": "not a regular file"}
    return root, reasons


@pytest.fixture
def torchcodec_ready():
    ok, reason = torchcodec_available()
    if not ok:
        pytest.skip(f"torchcodec cannot decode videos here: {reason}")


def pyav_frames(path, indices):
    with PyAVReader(str(path)) as reader:
        return reader.read(indices)


# ---- runs everywhere (no FFmpeg needed) ----

def test_torchcodec_is_a_backend_choice():
    assert "torchcodec" in VIDEO_BACKENDS  # the config schema takes its choices from here


def test_availability_is_checked_once_and_explained():
    ok, reason = torchcodec_available()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    assert "\n" not in reason and len(reason) <= 200
    assert torchcodec_available() is torchcodec_available()  # cached: the same tuple


@pytest.mark.parametrize("reason, expected", [
    ("no FFmpeg 4-9 shared libraries found: libavutil.so.61 ... libavutil.so.56 missing",
     r"data.video_backend: torchcodec cannot load the FFmpeg libraries it needs \(no FFmpeg 4-9 shared libraries "
     r"found: libavutil.so.61 ... libavutil.so.56 missing\); install FFmpeg \(e.g. apt-get install ffmpeg\) or use "
     r"video_backend: decord / pyav"),
    ("torchcodec is not installed", r"data.video_backend: torchcodec is not installed; pip install torchcodec .* "
                                    r"or use video_backend: decord / pyav"),
])
def test_clear_one_line_error_when_torchcodec_cannot_load(monkeypatch, videos, reason, expected):
    root, _ = videos
    monkeypatch.setattr(decoders, "torchcodec_available", lambda: (False, reason))
    with pytest.raises(ConfigError, match=expected) as error:
        TorchCodecReader(str(root / "good.mp4"))
    assert "\n" not in str(error.value)
    # raised before looking at the file, also through the dataset's entry points
    with pytest.raises(ConfigError, match="torchcodec"):
        open_reader(VideoRecord(path="missing.mp4", num_frames=None, label=0, is_video=True), str(root),
                    image_tmpl="{:05d}.png", video_backend="torchcodec")
    with pytest.raises(ConfigError, match="torchcodec"):
        verify_video_file(str(root / "good.mp4"), "torchcodec")


def test_dataset_does_not_treat_missing_ffmpeg_as_bad_videos(monkeypatch, videos_data):
    """A ConfigError is not a VideoReadError: the sample is not silently replaced by another video."""
    monkeypatch.setattr(decoders, "torchcodec_available", lambda: (False, "simulated: libavutil missing"))
    for split in ("train", "val"):
        dataset = create_dataset(override(videos_data, video_backend="torchcodec"), split, seed=0)
        with pytest.raises(ConfigError, match="simulated: libavutil missing"):
            dataset[0]


# ---- need torchcodec and FFmpeg ----

@pytest.mark.parametrize("name", ["good.mp4", "h264.mp4"])
def test_frames_match_pyav_exactly(torchcodec_ready, videos, name):
    """Same frames, same order, same pixels as PyAV (both convert yuv420p to RGB with FFmpeg's swscale)."""
    root, _ = videos
    indices = [3, 0, 15, 3, 7, 8]
    with TorchCodecReader(str(root / name)) as reader:
        assert reader.num_frames == NUM_FRAMES
        frames = reader.read(indices)
    assert frames.shape == (6, 3, 48, 64) and frames.dtype == torch.uint8 and frames.device.type == "cpu"
    assert frames.is_contiguous(memory_format=torch.channels_last)  # like the decord and PyAV readers
    assert torch.equal(frames[0], frames[3])
    assert torch.equal(frames, pyav_frames(root / name, indices))
    expected = torch.from_numpy(coded_frames(NUM_FRAMES)[indices]).permute(0, 3, 1, 2)
    assert (frames.float() - expected.float()).abs().mean() < 4  # lossy, but the right frames


def test_reads_every_frame_in_any_order(torchcodec_ready, videos):
    root, _ = videos
    everything = pyav_frames(root / "good.mp4", range(NUM_FRAMES))
    order = np.random.default_rng(0).permutation(NUM_FRAMES)
    with TorchCodecReader(str(root / "good.mp4")) as reader:
        assert torch.equal(reader.read(np.arange(NUM_FRAMES)), everything)
        assert torch.equal(reader.read(order), everything[order])  # one reader, several reads
    assert verify_video_file(str(root / "good.mp4"), "torchcodec") == NUM_FRAMES


def test_out_of_range_indices_are_a_caller_error(torchcodec_ready, videos):
    root, _ = videos
    with TorchCodecReader(str(root / "good.mp4")) as reader:
        with pytest.raises(IndexError):
            reader.read([0, NUM_FRAMES])
        with pytest.raises(ValueError, match="no frame indices"):
            reader.read([])


def test_each_broken_video_gets_its_reason(torchcodec_ready, videos):
    root, reasons = videos
    for name, reason in reasons.items():
        with pytest.raises(VideoReadError, match=reason) as error:
            with TorchCodecReader(str(root / name)) as reader:
                reader.read(range(reader.num_frames))
        assert error.value.path == str(root / name)
        assert "\n" not in error.value.reason and len(error.value.reason) < 300
        with pytest.raises(VideoReadError, match=reason):
            verify_video_file(str(root / name), "torchcodec")


def test_dataset_clips_equal_pyav_clips(torchcodec_ready, videos_data):
    for split in ("train", "val"):
        with_pyav = create_dataset(override(videos_data, video_backend="pyav"), split, seed=0)
        with_torchcodec = create_dataset(override(videos_data, video_backend="torchcodec"), split, seed=0)
        for index in range(len(with_pyav)):
            a, b = with_pyav[index], with_torchcodec[index]
            assert b["valid"] and b["errors"] == []
            assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["label"], b["label"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA decoding needs a GPU")
def test_cuda_decoding_matches_cpu(torchcodec_ready, videos):
    root, _ = videos
    indices = [5, 1, 1, 12]
    with TorchCodecReader(str(root / "h264.mp4"), device="cuda") as reader:
        frames = reader.read(indices)
    assert frames.device.type == "cuda" and frames.shape == (4, 3, 48, 64)
    cpu = pyav_frames(root / "h264.mp4", indices)
    # NVDEC's colour conversion is not swscale's: close, not identical
    assert (frames.cpu().float() - cpu.float()).abs().mean() < 3


def test_cuda_without_gpu_is_a_config_error(torchcodec_ready, videos, monkeypatch):
    root, _ = videos
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device"):
        TorchCodecReader(str(root / "good.mp4"), device="cuda")
