"""Frame sampling as the reference's strategies (indices written from its formulas), and the retrieval datasets on
the toy: frame folders and mp4 files give the same frames, one training item per caption."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from side4video.retrieval.annotations import read_msrvtt
from side4video.retrieval.data import (
    CaptionedClips,
    RetrievalVideos,
    centre_view,
    collate_captioned,
    sample_frames,
)
from side4video.retrieval.toy import generate_toy_retrieval


def test_stride_sampling_then_slice_framepos():
    # F = 30, K = 12: every 2nd frame (15 of them), then 12 of those
    assert sample_frames(30, 12, "stride").tolist() == [0, 2, 4, 6, 10, 12, 14, 16, 20, 22, 24, 28]
    assert sample_frames(30, 12, "stride", slice_framepos=0).tolist() == list(range(0, 24, 2))
    assert sample_frames(30, 12, "stride", slice_framepos=1).tolist() == list(range(6, 30, 2))
    assert sample_frames(24, 12, "stride").tolist() == list(range(0, 24, 2))


def test_segment_sampling_and_short_videos():
    assert sample_frames(30, 12, "segment_middle").tolist() == [1, 3, 6, 8, 11, 13, 16, 18, 21, 23, 26, 28]
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = sample_frames(30, 12, "segment_random", rng=rng)
        assert ((drawn // 2) == np.arange(12)).all()   # one frame in each segment of 2
    for mode in ("stride", "segment_middle", "segment_random"):
        assert sample_frames(5, 12, mode, rng=rng).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="needs a random generator"):
        sample_frames(30, 12, "segment_random")
    with pytest.raises(ValueError, match="slice_framepos"):
        sample_frames(30, 12, "stride", slice_framepos=3)


def test_centre_view_resizes_the_short_side_then_crops_the_middle():
    frames = torch.zeros(2, 3, 40, 80, dtype=torch.uint8)
    frames[..., 16:64] = 255            # white columns 16..63
    view = centre_view(frames, 20)      # 40x80 -> 20x40 (white 8..31), centre 20x20 = columns 10..29: all white
    assert view.shape == (2, 3, 20, 20) and (view == 255).all()
    frames[..., 16:64] = 0
    frames[..., :4] = 255               # the left edge is cut away
    assert (centre_view(frames, 20) == 0).all()


def test_datasets_on_the_toy_frames_and_videos_agree(tmp_path):
    info = generate_toy_retrieval(tmp_path / "toy", train_per_pair=1, frames=8, workers=1)
    test = read_msrvtt(info["val_csv"])
    from_frames = RetrievalVideos(test, info["frames"], max_frames=4, input_size=32, image_tmpl="{:05d}.jpg")
    from_videos = RetrievalVideos(test, info["videos"], max_frames=4, input_size=32, video_backend="pyav")
    a, b = from_frames[3], from_videos[3]
    assert a["valid"] and b["valid"] and a["frames"].shape == (4, 3, 32, 32)
    assert (a["frames"].float() - b["frames"].float()).abs().mean() < 6   # JPEG vs MPEG-4 of the same frames

    train = read_msrvtt(info["train_csv"], info["data_json"])
    clips = CaptionedClips(RetrievalVideos(train, info["frames"], max_frames=4, input_size=32,
                                           mode="segment_random", image_tmpl="{:05d}.jpg", seed=1))
    assert len(clips) == len(train.captions) == 3 * len(train.videos)
    batch = collate_captioned([clips[0], clips[1], clips[5]])
    assert batch["frames"].shape == (3, 4, 3, 32, 32) and batch["captions"][0] == train.captions[0]
    assert batch["video"].tolist() == [train.caption_video[i] for i in (0, 1, 5)]
    again = clips[5]
    assert torch.equal(again["frames"], batch["frames"][2])          # (seed, epoch, index) decide the frames

    (tmp_path / "toy" / "frames" / test.videos[0] / "00001.jpg").write_bytes(b"broken")
    broken = from_frames[0]
    assert not broken["valid"] and broken["frames"].shape == (4, 3, 32, 32) and broken["errors"]
