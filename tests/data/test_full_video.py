"""Full-video sampling: the frame-index rule, the long-video strides, and padded batches with a mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from side4video.data.full_video import (
    FullVideoSampler,
    collate_full_video,
    full_video_indices,
    long_video_stride,
    pad_clips,
)


def test_long_video_stride_rule():
    assert [long_video_stride(n) for n in (1, 1200, 1201, 4048, 4049, 8000, 8001, 100_000)] == \
        [1, 1, 2, 2, 4, 4, 8, 8]


def test_every_frame_of_a_short_video():
    assert full_video_indices(40, 512).tolist() == list(range(40))
    assert full_video_indices(1, 512).tolist() == [0]
    assert full_video_indices(10, 512, stride=3).tolist() == [0, 3, 6, 9]
    assert full_video_indices(9000, None).tolist()[:3] == [0, 8, 16] and len(full_video_indices(9000, None)) == 1125
    assert full_video_indices(2000, None).tolist()[:3] == [0, 2, 4]
    with pytest.raises(ValueError):
        full_video_indices(0, 512)


@pytest.mark.parametrize("frames,stride", [(1000, None), (3000, None), (20_000, None), (700, 1)])
def test_bounded_by_max_frames_and_spread_over_the_whole_video(frames, stride):
    indices = full_video_indices(frames, 512, stride)
    step = stride or long_video_stride(frames)
    assert len(indices) == min(512, len(range(0, frames, step)))
    assert indices.dtype == np.int64 and indices[0] == 0 and np.all(np.diff(indices) > 0)
    assert np.all(indices % step == 0) and indices[-1] < frames
    gap = -(-frames // 512)
    assert np.diff(indices).max() <= 2 * max(gap, step) and indices[-1] >= frames - 2 * max(gap, step)


def test_random_phase_is_reproducible_and_inside_the_stride():
    first = full_video_indices(3000, 2000, rng=np.random.default_rng(5))
    again = full_video_indices(3000, 2000, rng=np.random.default_rng(5))
    assert np.array_equal(first, again) and 0 <= first[0] < 2 and np.all(np.diff(first) == 2)
    phases = {int(full_video_indices(3000, 2000, rng=np.random.default_rng(s))[0]) for s in range(20)}
    assert phases == {0, 1}


def test_sampler_is_a_frame_sampler_drop_in():
    sampler = FullVideoSampler(max_frames=16)
    assert sampler.validation(40).tolist() == full_video_indices(40, 16).tolist()
    assert sampler.test(40).shape == (1, 16) and np.array_equal(sampler.test(40)[0], sampler.validation(40))
    assert len(sampler.train(10, np.random.default_rng(0))) == 10
    assert sampler.frames_per_clip == 1
    with pytest.raises(ValueError, match="one clip"):
        sampler.test(40, num_clips=2)


def sample(n, label, index, views=1, size=8):
    frames = torch.randint(1, 256, (views, n, 3, size, size), dtype=torch.uint8)
    return dict(frames=frames, label=torch.full((views,), label), index=index, video_id=f"v{index}", valid=True,
                errors=[(f"v{index}", "x")] if index == 1 else [], flipped=torch.tensor([False, True][:views]))


def test_collate_pads_to_the_longest_clip_with_a_mask():
    samples = [sample(5, 0, 0), sample(3, 2, 1), sample(7, 1, 2)]
    batch = collate_full_video(samples)
    assert batch["frames"].shape == (3, 7, 3, 8, 8) and batch["frames"].dtype == torch.uint8
    assert batch["mask"].dtype == torch.bool and batch["mask"].sum(1).tolist() == [5, 3, 7] == batch["lengths"].tolist()
    assert batch["mask"][1].tolist() == [True] * 3 + [False] * 4                 # padding at the end
    for i, s in enumerate(samples):
        n = s["frames"].shape[1]
        assert torch.equal(batch["frames"][i, :n], s["frames"][0])
        assert not batch["frames"][i, n:].any()
    assert batch["label"].tolist() == [0, 2, 1] and batch["index"].tolist() == [0, 1, 2]
    assert batch["num_samples"] == 3 and batch["errors"] == [("v1", "x")]


def test_collate_views_for_evaluation():
    samples = [sample(4, 3, 0, views=2), sample(6, 1, 1, views=2)]
    batch = collate_full_video(samples, stack_views=True)
    assert batch["frames"].shape == (2, 2, 6, 3, 8, 8) and batch["mask"].shape == (2, 6)
    assert batch["mask"].sum(1).tolist() == [4, 6] and batch["label"].tolist() == [3, 1]
    assert batch["flipped"].tolist() == [[False, True], [False, True]] and batch["valid"].tolist() == [True, True]
    assert batch["video_id"] == ["v0", "v1"] and batch["sample_errors"] == [[], [("v1", "x")]]
    assert torch.equal(batch["frames"][0, 1, :4], samples[0]["frames"][1])
    flat = collate_full_video(samples)                                             # training layout
    assert flat["frames"].shape == (4, 6, 3, 8, 8) and flat["mask"].sum(1).tolist() == [4, 4, 6, 6]
    with pytest.raises(ValueError, match="only the frame count"):
        pad_clips([torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 4, 4)])


def test_sampler_and_collate_with_the_video_dataset(tmp_path):
    """The wiring the lead will do: VideoDataset with FullVideoSampler, batched by collate_full_video."""
    from side4video.data.dataset import VideoDataset
    from side4video.data.lists import read_annotation_list
    from side4video.data.toy_sparse import generate_toy_sparse_dataset
    from side4video.data.transforms import EvalViews, TrainAugmentation

    info = generate_toy_sparse_dataset(str(tmp_path), train_per_class=1, val_per_class=1, min_frames=12,
                                       max_frames=20, height=32, width=40, workers=1)
    records = read_annotation_list(info["train_frames_list"], num_classes=4)
    common = dict(class_names=info["class_names"], image_tmpl=info["image_tmpl"], flip_pairs=info["flip_pairs"])
    train = VideoDataset(records, info["frames_root"], split="train", sampler=FullVideoSampler(max_frames=16),
                         transform=TrainAugmentation(32, (32, 40), crop="center", flip=False), **common)
    batch = collate_full_video([train[i] for i in range(len(train))])
    lengths = [min(r.num_frames, 16) for r in records]
    assert batch["frames"].shape == (4, max(lengths), 3, 32, 32) and batch["lengths"].tolist() == lengths
    val = VideoDataset(records, info["frames_root"], split="val", sampler=FullVideoSampler(max_frames=16),
                       transform=EvalViews(32, (32, 40)), **common)
    batch = collate_full_video([val[i] for i in range(len(val))], stack_views=True)
    assert batch["frames"].shape == (4, 1, max(lengths), 3, 32, 32) and batch["lengths"].tolist() == lengths
