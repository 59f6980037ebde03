"""Exact frame indices of the tsn protocol (TSN/TSM rules; 0-based, frame file = index + 1).

The reference's sth / kinetics protocols are tested in test_data_sampling_reference.py.
"""
import numpy as np
import pytest

from side4video.data.sampling import (
    FrameSampler,
    dense_test_starts,
    dense_train_indices,
    expand_segments,
    segment_test_starts,
    segment_train_starts,
)


def test_tsn_train_random_offset_inside_each_segment():
    # F=24, T=8, L=1: avg = 3, start_k = 3k + randint(3)
    offsets = np.random.default_rng(5).integers(3, size=8)
    starts = segment_train_starts(24, 8, 1, np.random.default_rng(5))
    np.testing.assert_array_equal(starts, np.arange(8) * 3 + offsets)
    assert offsets.min() != offsets.max()  # the seed really does vary the offsets


def test_tsn_train_is_reproducible_and_varies_with_the_generator():
    draws = [tuple(segment_train_starts(300, 8, 1, np.random.default_rng(s))) for s in (0, 0, 1)]
    assert draws[0] == draws[1] != draws[2]


def test_tsn_train_with_seg_length_2():
    # F=24, T=4, L=2: avg = 23 // 4 = 5
    offsets = np.random.default_rng(3).integers(5, size=4)
    indices = FrameSampler(4, seg_length=2).train(24, np.random.default_rng(3))
    starts = np.arange(4) * 5 + offsets
    np.testing.assert_array_equal(indices, np.stack([starts, starts + 1], axis=1).reshape(-1))


def test_tsn_train_few_starts_branch_draws_sorted_starts():
    # F=9, T=8, L=3: avg = 7 // 8 = 0 and F > T -> sorted draws from range(7)
    expected = np.sort(np.random.default_rng(2).integers(7, size=8))
    np.testing.assert_array_equal(segment_train_starts(9, 8, 3, np.random.default_rng(2)), expected)


def test_tsn_short_video_repeats_frames():
    # F=5 < T=8: start_k = floor(5k / 8)
    np.testing.assert_array_equal(segment_train_starts(5, 8, 1, np.random.default_rng(0)), [0, 0, 1, 1, 2, 3, 3, 4])
    # validation: int(0.625 k + 0.3125)
    np.testing.assert_array_equal(segment_test_starts(5, 8, 1), [0, 0, 1, 2, 2, 3, 4, 4])


def test_tsn_val_takes_segment_middles():
    np.testing.assert_array_equal(segment_test_starts(24, 8, 1), [1, 4, 7, 10, 13, 16, 19, 22])
    # no random shift at train time = validation rule
    sampler = FrameSampler(8, random_shift=False)
    np.testing.assert_array_equal(sampler.train(24, np.random.default_rng(0)), [1, 4, 7, 10, 13, 16, 19, 22])


def test_tsn_val_with_seg_length_2_and_clipping():
    # tick = 23 / 4 = 5.75: starts int(5.75 k + 2.875) = 2, 8, 14, 20
    np.testing.assert_array_equal(FrameSampler(4, seg_length=2).test(24)[0], [2, 3, 8, 9, 14, 15, 20, 21])
    # F=3 < L=4: indices clip to the last frame
    np.testing.assert_array_equal(expand_segments(np.array([0, 2]), 4, 3), [0, 1, 2, 2, 2, 2, 2, 2])


def test_tsn_multi_clip_test():
    # F=24, T=4: tick = 6; clip c of K at 6k + 6 (c + 1) / (K + 1)
    np.testing.assert_array_equal(FrameSampler(4).test(24, num_clips=2), [[2, 8, 14, 20], [4, 10, 16, 22]])
    np.testing.assert_array_equal(FrameSampler(4).test(24, num_clips=3),
                                  [[1, 7, 13, 19], [3, 9, 15, 21], [4, 10, 16, 22]])
    np.testing.assert_array_equal(FrameSampler(4).test(24, num_clips=1), [[3, 9, 15, 21]])


def test_dense_train_window_and_wrap_around():
    # F=10 shorter than the T*rate=16 window: start 0, indices wrap modulo F
    np.testing.assert_array_equal(dense_train_indices(10, 4, 4, np.random.default_rng(0)), [0, 4, 8, 2])
    # F=100, T=4, rate=8: start ~ randint(69)
    start = np.random.default_rng(7).integers(69)
    sampler = FrameSampler(4, dense=True, sampling_rate=8)
    np.testing.assert_array_equal(sampler.train(100, np.random.default_rng(7)), start + np.arange(4) * 8)


def test_dense_test_starts():
    assert dense_test_starts(100, 4, 8, 1) == [34]
    assert dense_test_starts(100, 4, 8, 2) == [0, 68]
    assert dense_test_starts(100, 4, 8, 3) == [0, 34, 68]
    assert dense_test_starts(101, 4, 8, 4) == [0, 23, 46, 69]
    assert dense_test_starts(10, 4, 8, 3) == [0, 0, 0]
    np.testing.assert_array_equal(FrameSampler(4, dense=True, sampling_rate=8).test(100, 2),
                                  [[0, 8, 16, 24], [68, 76, 84, 92]])


@pytest.mark.parametrize("num_frames", [1, 2, 7, 8, 9, 33, 301])
@pytest.mark.parametrize("seg_length", [1, 3])
def test_indices_stay_in_range(num_frames, seg_length):
    sampler = FrameSampler(8, seg_length=seg_length)
    for seed in range(5):
        train = sampler.train(num_frames, np.random.default_rng(seed))
        assert train.shape == (8 * seg_length,) and 0 <= train.min() and train.max() < num_frames
    test = sampler.test(num_frames, num_clips=3)
    assert test.shape == (3, 8 * seg_length) and 0 <= test.min() and test.max() < num_frames


def test_tsn_train_never_reaches_the_last_f_mod_t_frames():
    """Documents TSN's truncated segments: with avg = F // T, frames T * avg .. F - 1 are never drawn."""
    sampler = FrameSampler(8, protocol="tsn")
    seen = set()
    for seed in range(500):
        seen.update(sampler.train(47, np.random.default_rng(seed)).tolist())
    assert seen == set(range(40))  # 47 // 8 = 5: frames 40..46 are out of reach


def test_tsn_is_the_default_protocol_of_the_sampler_class():
    assert FrameSampler(8).protocol == "tsn"
    np.testing.assert_array_equal(FrameSampler(8).validation(24), [1, 4, 7, 10, 13, 16, 19, 22])
