"""Short videos: the reference's dense window wraps around (kept as the default, and said), ``data.dense_window:
adaptive`` keeps frames in order and clips apart; every evaluated video says how many of its views differ."""
from __future__ import annotations

import numpy as np
import pytest

from side4video.data import create_dataset
from side4video.data.sampling import FrameSampler, adaptive_test_starts
from side4video.data.transforms import distinct_view_count
from tests.support import override


def _sampler(window: str, protocol: str = "kinetics", **kwargs) -> FrameSampler:
    return FrameSampler(num_segments=8, dense=True, protocol=protocol, dense_range=128, dense_window=window, **kwargs)


def test_the_reference_window_wraps_a_short_video_and_repeats_its_clips():
    clips = _sampler("reference").test(24, num_clips=2)
    np.testing.assert_array_equal(clips[0], [(16 * i) % 24 for i in range(8)])    # 0 16 8 0 16 8 0 16
    np.testing.assert_array_equal(clips[0], clips[1])


@pytest.mark.parametrize("protocol", ["kinetics", "sth", "tsn"])
def test_the_adaptive_window_keeps_frames_in_order_and_clips_apart(protocol):
    sampler = _sampler("adaptive", protocol, sampling_rate=16)
    # F = 24, T = 8: stride 24 // 8 = 3, last start 24 - 1 - 7 * 3 = 2
    clips = sampler.test(24, num_clips=2)
    np.testing.assert_array_equal(clips, [[3 * i for i in range(8)], [2 + 3 * i for i in range(8)]])
    np.testing.assert_array_equal(sampler.validation(24), [1 + 3 * i for i in range(8)])
    assert adaptive_test_starts(24, 8, 3) == [0, 1, 2]
    drawn = {tuple(sampler.train(24, np.random.default_rng(seed))) for seed in range(200)}
    assert drawn == {tuple(start + 3 * i for i in range(8)) for start in range(3)}
    # fewer frames than T: every frame, in order, some twice
    np.testing.assert_array_equal(sampler.test(5, 1)[0], [0, 0, 1, 1, 2, 3, 3, 4])
    # a video as long as the window: the rule of the protocol, unchanged
    long = _sampler("reference", protocol, sampling_rate=16)
    np.testing.assert_array_equal(sampler.test(128, 2), long.test(128, 2))


def test_distinct_views_are_distinct_clips_times_distinct_crops():
    geometry = [(0, 0, False), (0, 8, False), (0, 8, False)]            # two crops coincide
    assert distinct_view_count(np.array([[0, 1], [0, 1], [2, 3]]), geometry) == 2 * 2


def test_every_evaluated_video_says_how_many_views_differ_and_whether_frames_are_in_order(frames_data):
    """20-frame videos, T = 4: the reference dense window (16 frames by default here: wraps) and 4 kinetics
    clips (3 distinct positions), as the dataset reports them."""
    dense = override(frames_data, sampling="dense", dense_range=64, test_crops=1, test_clips=2)
    sample = create_dataset(dense, "test", seed=0)[0]
    assert sample["out_of_order"] and sample["distinct_views"] == 1
    adaptive = override(dense, dense_window="adaptive")
    sample = create_dataset(adaptive, "test", seed=0)[0]
    assert not sample["out_of_order"] and sample["distinct_views"] == 2
    many = override(frames_data, test_crops=3, test_clips=12)
    dataset = create_dataset(many, "test", seed=0)
    clips = dataset.sampler.test(20, 12)
    expected = len({tuple(row) for row in clips.tolist()}) * 3
    assert dataset[0]["distinct_views"] == expected < 36
