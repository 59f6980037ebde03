"""The reference's own sampling rules (Recognition/datasets/sth.py and kinetics.py), 0-based indices.

Expected values are worked out by hand from the reference formulas (seg = (F - 1) / T, numpy's round half to
even, int() truncation); T = 8 unless stated. The reference adds index_bias 1 to every index for file names.
"""
import numpy as np
import pytest

from side4video.data.sampling import (
    FrameSampler,
    is_something_something,
    kinetics_test_starts,
    kinetics_train_starts,
    kinetics_val_starts,
    resolve_protocol,
    sth_test_starts,
    sth_train_indices,
    sth_val_starts,
    window_test_starts,
    window_train_start,
)

LENGTHS = [1, 5, 8, 9, 13, 47, 300]  # shorter than T, = T, T + 1, .5 rounding cases, the SS example, long


def draws(sampler, num_frames, count=2000):
    return np.stack([sampler.train(num_frames, np.random.default_rng(seed)) for seed in range(count)])


# -- protocol choice -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("something", True), ("somethingv2", True), ("Something-Something-V2", True), ("sthv1", True),
    ("ssv2", True), ("SSv2_mini", True), ("smth-smth", True),
    ("k400", False), ("kinetics400", False), ("toy", False), ("custom", False), ("ucf101", False)])
def test_something_something_names(name, expected):
    assert is_something_something(name) is expected
    assert resolve_protocol("auto", name) == ("sth" if expected else "kinetics")


def test_explicit_protocols_win_over_the_dataset_name():
    assert resolve_protocol("tsn", "ssv2") == "tsn"
    assert resolve_protocol("kinetics", "ssv2") == "kinetics"
    assert resolve_protocol("sth", "k400") == "sth"
    with pytest.raises(ValueError):
        resolve_protocol("slowfast", "k400")
    with pytest.raises(ValueError, match="resolve 'auto'"):
        FrameSampler(8, protocol="auto")


# -- sth training --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames, ranges", [
    # ticks i * F // T; position i is uniform over [tick_i, tick_(i+1))
    (9, [[0], [1], [2], [3], [4], [5], [6], [7, 8]]),
    (13, [[0], [1, 2], [3], [4, 5], [6, 7], [8], [9, 10], [11, 12]]),  # ticks 0 1 3 4 6 8 9 11 13
    (47, [range(0, 5), range(5, 11), range(11, 17), range(17, 23), range(23, 29), range(29, 35),
          range(35, 41), range(41, 47)]),
    (300, [range(0, 37), range(37, 75), range(75, 112), range(112, 150), range(150, 187), range(187, 225),
           range(225, 262), range(262, 300)]),
])
def test_sth_train_draws_uniformly_inside_each_tick_segment(num_frames, ranges):
    samples = draws(FrameSampler(8, protocol="sth"), num_frames)
    assert samples.shape == (2000, 8)
    for position, allowed in enumerate(ranges):
        assert set(samples[:, position].tolist()) == set(allowed), position
    # uniform: each value of the 6-frame segment [41, 47) of F = 47 about 1/6 of the time
    if num_frames == 47:
        counts = np.bincount(samples[:, 7] - 41, minlength=6)
        assert counts.min() > 2000 / 6 * 0.8


def test_sth_train_reaches_frames_40_to_46_of_a_47_frame_video():
    samples = draws(FrameSampler(8, protocol="sth"), 47, count=300)
    assert set(range(40, 47)) <= set(samples.ravel().tolist())


def test_sth_train_short_videos_take_every_frame_plus_sorted_random_repeats():
    # F <= T * L: arange(F) plus T * L - F draws from randint(F), sorted
    np.testing.assert_array_equal(FrameSampler(8, protocol="sth").train(8, np.random.default_rng(0)), np.arange(8))
    for seed in range(50):
        indices = FrameSampler(8, protocol="sth").train(5, np.random.default_rng(seed))
        assert indices.shape == (8,) and np.all(np.diff(indices) >= 0)
        assert set(indices.tolist()) == {0, 1, 2, 3, 4}
    assert FrameSampler(8, protocol="sth").train(1, np.random.default_rng(0)).tolist() == [0] * 8
    # F = 10 <= T * L = 12 with T = 4, L = 3: 12 sorted indices covering 0..9
    indices = FrameSampler(4, seg_length=3, protocol="sth").train(10, np.random.default_rng(1))
    assert indices.shape == (12,) and set(indices.tolist()) == set(range(10)) and np.all(np.diff(indices) >= 0)
    # the repeated frames are uniform over the video
    repeats = np.concatenate([sth_train_indices(5, 8, 1, np.random.default_rng(s)) for s in range(600)])
    counts = np.bincount(repeats, minlength=5) - 600  # minus the copy every draw holds
    assert counts.sum() == 1800 and counts.min() > 1800 / 5 * 0.8


def test_sth_train_with_seg_length_takes_consecutive_frames_inside_each_segment():
    # F = 47, T = 8, L = 2: segment i starts at tick_i + randint(len_i - 1)
    samples = draws(FrameSampler(8, seg_length=2, protocol="sth"), 47, count=1000)
    assert samples.shape == (1000, 16)
    np.testing.assert_array_equal(samples[:, 1::2], samples[:, 0::2] + 1)
    assert set(samples[:, 0].tolist()) == set(range(0, 4))    # [0, 5) holds starts 0..3
    assert set(samples[:, 14].tolist()) == set(range(41, 46))  # [41, 47) holds starts 41..45


# -- sth validation and test ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames, expected", [
    (1, [0] * 8),
    (5, [0, 0, 1, 2, 2, 2, 3, 4]),          # seg 0.5: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(3.5) = 4
    (8, [0, 1, 2, 3, 4, 4, 5, 6]),          # seg 0.875: round(3.5) = 4, int(0.4375) = 0
    (9, [0, 1, 2, 3, 4, 5, 6, 7]),          # seg 1, int(0.5) = 0
    (13, [0, 2, 3, 4, 6, 8, 9, 10]),        # seg 1.5: round(4.5) = 4, round(7.5) = 8, round(10.5) = 10
    (47, [2, 8, 14, 19, 25, 31, 36, 42]),   # seg 5.75: round(11.5) = 12, round(34.5) = 34 (not 35), + int(2.875)
    (300, [18, 55, 93, 130, 168, 205, 242, 280]),  # seg 37.375: round(149.5) = 150, + int(18.6875)
])
def test_sth_validation_atm_rule(num_frames, expected):
    np.testing.assert_array_equal(sth_val_starts(num_frames, 8), expected)
    sampler = FrameSampler(8, protocol="sth")
    np.testing.assert_array_equal(sampler.validation(num_frames), expected)
    # random_shift False: the training split takes the validation rule
    no_shift = FrameSampler(8, protocol="sth", random_shift=False)
    np.testing.assert_array_equal(no_shift.train(num_frames, np.random.default_rng(0)), expected)
    np.testing.assert_array_equal(sampler.test(num_frames, 1), [expected])  # one test clip = validation


def test_sth_test_clips():
    lefts = np.array([0, 6, 12, 17, 23, 29, 34, 40])  # int(round(5.75 i)) for F = 47
    # K = 2: duration 5.75 / 3; int(1.92) = 1, int(3.83) = 3
    np.testing.assert_array_equal(FrameSampler(8, protocol="sth").test(47, 2), [lefts + 1, lefts + 3])
    # K = 4: duration 1.15; int(1.15), int(2.3), int(3.45), int(4.6)
    np.testing.assert_array_equal(FrameSampler(8, protocol="sth").test(47, 4),
                                  [lefts + 1, lefts + 2, lefts + 3, lefts + 4])
    # F = 300, K = 2: lefts int(round(37.375 i)), duration 12.458: + 12, + 24
    lefts = np.array([0, 37, 75, 112, 150, 187, 224, 262])
    np.testing.assert_array_equal(sth_test_starts(300, 8, 0, 2), lefts + 12)
    np.testing.assert_array_equal(sth_test_starts(300, 8, 1, 2), lefts + 24)
    # short video, F = 5: duration 0.5 / 3, both clips are the rounded lefts
    np.testing.assert_array_equal(FrameSampler(8, protocol="sth").test(5, 2), [[0, 0, 1, 2, 2, 2, 3, 4]] * 2)


def test_sth_validation_with_seg_length_expands_each_start():
    # not defined by the reference (one frame per segment there): start, start + 1, ..., clipped to F - 1
    np.testing.assert_array_equal(FrameSampler(4, seg_length=2, protocol="sth").validation(20),
                                  [2, 3, 7, 8, 12, 13, 16, 17])  # seg 4.75: lefts 0, 5, 10 (9.5), 14; + 2
    np.testing.assert_array_equal(FrameSampler(8, seg_length=3, protocol="sth").validation(5),
                                  [0, 1, 2, 0, 1, 2, 1, 2, 3, 2, 3, 4, 2, 3, 4, 2, 3, 4, 3, 4, 4, 4, 4, 4])


# -- kinetics ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames, lefts", [
    # int(round(seg * i)) for i = 0..8; position i is uniform over [lefts[i], lefts[i + 1]] (inclusive)
    (5, [0, 0, 1, 2, 2, 2, 3, 4, 4]),
    (8, [0, 1, 2, 3, 4, 4, 5, 6, 7]),
    (9, [0, 1, 2, 3, 4, 5, 6, 7, 8]),
    (13, [0, 2, 3, 4, 6, 8, 9, 10, 12]),
    (47, [0, 6, 12, 17, 23, 29, 34, 40, 46]),
    (300, [0, 37, 75, 112, 150, 187, 224, 262, 299]),
])
def test_kinetics_train_atm_ranges_include_both_ends(num_frames, lefts):
    samples = draws(FrameSampler(8, protocol="kinetics"), num_frames)
    for position in range(8):
        assert set(samples[:, position].tolist()) == set(range(lefts[position], lefts[position + 1] + 1)), position
    starts = kinetics_train_starts(num_frames, 8, np.random.default_rng(0))
    assert starts.shape == (8,) and starts.dtype.kind == "i"


def test_kinetics_train_is_uniform_over_its_range():
    samples = draws(FrameSampler(8, protocol="kinetics"), 47, count=3000)
    counts = np.bincount(samples[:, 0], minlength=7)  # [0, 6]: 7 values
    assert counts.min() > 3000 / 7 * 0.8


@pytest.mark.parametrize("num_frames, expected", [
    (1, [0] * 8),
    (5, [0, 0, 1, 1, 2, 3, 3, 4]),         # int(0.625 i)
    (8, [0, 1, 2, 3, 4, 5, 6, 7]),
    (9, [0, 1, 2, 3, 4, 5, 6, 7]),         # int(1.125 i)
    (47, [0, 5, 11, 17, 23, 29, 35, 41]),  # int(5.875 i)
    (300, [0, 37, 75, 112, 150, 187, 225, 262]),
])
def test_kinetics_validation(num_frames, expected):
    np.testing.assert_array_equal(kinetics_val_starts(num_frames, 8), expected)
    np.testing.assert_array_equal(FrameSampler(8, protocol="kinetics").validation(num_frames), expected)
    np.testing.assert_array_equal(FrameSampler(8, protocol="kinetics", random_shift=False)
                                  .train(num_frames, np.random.default_rng(0)), expected)
    np.testing.assert_array_equal(FrameSampler(8, protocol="kinetics").test(num_frames, 1), [expected])


def test_kinetics_test_clips():
    sampler = FrameSampler(8, protocol="kinetics")
    val = [0, 5, 11, 17, 23, 29, 35, 41]
    # F = 47, tick 5.875: shifts int(linspace(0, 4.875, K))
    np.testing.assert_array_equal(sampler.test(47, 2), [val, [4, 9, 15, 21, 27, 33, 39, 45]])
    np.testing.assert_array_equal(sampler.test(47, 4), [val, [1, 6, 12, 18, 24, 30, 36, 42],
                                                        [3, 8, 14, 20, 26, 32, 38, 44],
                                                        [4, 9, 15, 21, 27, 33, 39, 45]])
    # F = 300, tick 37.5: shifts 0, 12, 24, 36 (linspace(0, 36.5, 4) = 0, 12.17, 24.33, 36.5)
    np.testing.assert_array_equal(kinetics_test_starts(300, 8, 1, 4), [12, 49, 87, 124, 162, 199, 237, 274])
    np.testing.assert_array_equal(kinetics_test_starts(300, 8, 3, 4), [36, 73, 111, 148, 186, 223, 261, 298])
    # F < T: linspace(0, -0.375, 2) truncates to 0 (numpy 1.x, as the reference ran), so both clips are equal
    np.testing.assert_array_equal(sampler.test(5, 2), [[0, 0, 1, 1, 2, 3, 3, 4]] * 2)
    np.testing.assert_array_equal(sampler.test(8, 2), [np.arange(8)] * 2)


def test_kinetics_with_seg_length_expands_each_start():
    np.testing.assert_array_equal(FrameSampler(4, seg_length=2, protocol="kinetics").validation(20),
                                  [0, 1, 5, 6, 10, 11, 15, 16])  # int(5 i), then + 1
    samples = draws(FrameSampler(4, seg_length=2, protocol="kinetics"), 20, count=200)
    np.testing.assert_array_equal(np.minimum(samples[:, 0::2] + 1, 19), samples[:, 1::2])


# -- coverage --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["sth", "kinetics"])
@pytest.mark.parametrize("num_frames", LENGTHS)
def test_training_reaches_every_frame(protocol, num_frames):
    seen = set(draws(FrameSampler(8, protocol=protocol), num_frames, count=1500).ravel().tolist())
    assert seen == set(range(num_frames))


@pytest.mark.parametrize("protocol", ["sth", "kinetics"])
@pytest.mark.parametrize("num_frames", LENGTHS)
@pytest.mark.parametrize("seg_length", [1, 3])
def test_indices_stay_in_range_and_shapes(protocol, num_frames, seg_length):
    sampler = FrameSampler(8, seg_length=seg_length, protocol=protocol)
    for seed in range(5):
        train = sampler.train(num_frames, np.random.default_rng(seed))
        assert train.shape == (8 * seg_length,) and 0 <= train.min() and train.max() < num_frames
    for clips in (1, 2, 4):
        test = sampler.test(num_frames, clips)
        assert test.shape == (clips, 8 * seg_length) and 0 <= test.min() and test.max() < num_frames
    np.testing.assert_array_equal(sampler.validation(num_frames), sampler.test(num_frames, 1)[0])


def test_training_randomness_comes_only_from_the_generator():
    for protocol in ("sth", "kinetics"):
        sampler = FrameSampler(8, protocol=protocol)
        np.random.seed(0)
        first = sampler.train(300, np.random.default_rng(11))
        np.random.seed(1)  # the global numpy state plays no part
        assert np.array_equal(first, sampler.train(300, np.random.default_rng(11)))
        assert any(not np.array_equal(first, sampler.train(300, np.random.default_rng(s))) for s in range(3))


# -- dense windows ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["sth", "kinetics"])
def test_dense_short_videos_wrap_around(protocol):
    # R = 128, T = 8: stride 16; F = 47 <= R: start 0, indices mod 47
    sampler = FrameSampler(8, dense=True, protocol=protocol)
    expected = [0, 16, 32, 1, 17, 33, 2, 18]
    for seed in range(20):
        np.testing.assert_array_equal(sampler.train(47, np.random.default_rng(seed)), expected)
    np.testing.assert_array_equal(sampler.validation(47), expected)
    np.testing.assert_array_equal(sampler.test(47, 2), [expected, expected])  # max(F - R, 0) = 0
    # F = R and F = R + 1: the reference's only start is 0 (randint(0, 1))
    for num_frames in (128, 129):
        for seed in range(20):
            np.testing.assert_array_equal(sampler.train(num_frames, np.random.default_rng(seed)), np.arange(8) * 16)
    assert sampler.frames_per_clip == 8


@pytest.mark.parametrize("protocol", ["sth", "kinetics"])
def test_dense_long_video(protocol):
    sampler = FrameSampler(8, dense=True, protocol=protocol)
    window = np.arange(8) * 16
    # training start uniform over [0, F - R - 1] = [0, 171]: the reference never draws 172
    starts = {int(sampler.train(300, np.random.default_rng(seed))[0]) for seed in range(3000)}
    assert starts == set(range(172))
    assert {window_train_start(300, 128, np.random.default_rng(s)) for s in range(3000)} == set(range(172))
    for seed in range(10):
        indices = sampler.train(300, np.random.default_rng(seed))
        np.testing.assert_array_equal(indices, indices[0] + window)
    # test starts c * floor(172 / (K - 1)); K = 1: 172 // 2
    np.testing.assert_array_equal(sampler.test(300, 1), [86 + window])
    np.testing.assert_array_equal(sampler.test(300, 2), [window, 172 + window])
    np.testing.assert_array_equal(sampler.test(300, 4), [window, 57 + window, 114 + window, 171 + window])
    # validation: the K = 1 window, not the reference's random start
    np.testing.assert_array_equal(sampler.validation(300), 86 + window)
    np.testing.assert_array_equal(FrameSampler(8, dense=True, protocol=protocol, random_shift=False)
                                  .train(300, np.random.default_rng(0)), 86 + window)


def test_dense_range_sets_the_stride():
    sampler = FrameSampler(4, dense=True, protocol="kinetics", dense_range=12, sampling_rate=99)
    np.testing.assert_array_equal(sampler.test(20, 1), [[4, 7, 10, 13]])   # stride 12 // 4, start (20 - 12) // 2
    np.testing.assert_array_equal(sampler.test(20, 3), [[0, 3, 6, 9], [4, 7, 10, 13], [8, 11, 14, 17]])
    assert window_test_starts(101, 64, 3) == [0, 18, 36]  # floor(37 / 2) = 18
    assert window_test_starts(10, 64, 4) == [0, 0, 0, 0]
