"""The sparse toy generator's sparsity knobs (--bursts, --burst_length): defaults unchanged, knobs change the
informative fraction, the meta file records non-default knobs (so such a dataset is generated again)."""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from side4video.data.toy_sparse import (
    BURST_LENGTH,
    BURSTS,
    DISTRACTOR_P,
    INFORMATIVE,
    RUN_LENGTH,
    _range_argument,
    frame_schedule,
    generate_toy_sparse_dataset,
    render_clip,
)

SMALL = dict(train_per_class=1, val_per_class=1, min_frames=32, max_frames=36, height=32, width=40, workers=1)


def reference_schedule(rng: np.random.Generator, frames: int) -> np.ndarray:
    """The schedule as the generator drew it before the knobs existed (module constants, same draw order)."""
    types = np.empty(frames, dtype=np.int64)
    t = 0
    while t < frames:
        kind = 1 + int(rng.choice(3, p=DISTRACTOR_P))
        run = int(rng.integers(RUN_LENGTH[0], RUN_LENGTH[1] + 1))
        types[t:t + run] = kind
        t += run
    bursts = int(rng.integers(4, 6))
    edges = (np.arange(bursts + 1) * frames) // bursts
    for low, high in zip(edges[:-1], edges[1:]):
        length = min(int(rng.integers(3, 6)), int(high - low))
        start = int(rng.integers(low, high - length + 1))
        types[start:start + length] = INFORMATIVE
    return types


def test_defaults_draw_the_documented_schedules_and_clips():
    assert BURSTS == (4, 5) and BURST_LENGTH == (3, 5)
    for seed in range(200):
        frames = 32 + seed % 17
        old, new = np.random.default_rng([seed, 7]), np.random.default_rng([seed, 7])
        assert np.array_equal(reference_schedule(old, frames), frame_schedule(new, frames))
        assert old.integers(1 << 30) == new.integers(1 << 30)   # the same number of draws: later draws unchanged
    explicit = render_clip(np.random.default_rng(5), 2, 40, 32, 40, bursts=(4, 5), burst_length=(3, 5))
    default = render_clip(np.random.default_rng(5), 2, 40, 32, 40)
    for a, b in zip(explicit, default):
        assert np.array_equal(a, b)


def informative_fraction(bursts, burst_length, clips=400):
    rng = np.random.default_rng(0)
    return np.mean(np.concatenate([frame_schedule(rng, int(rng.integers(32, 49)), bursts, burst_length) == INFORMATIVE
                                   for _ in range(clips)]))


def test_knobs_set_the_informative_fraction():
    default = informative_fraction(BURSTS, BURST_LENGTH)
    assert 0.40 < default < 0.50
    assert 0.26 < informative_fraction((3, 3), (3, 5)) < 0.34
    assert 0.16 < informative_fraction((2, 2), (3, 5)) < 0.24
    assert 0.18 < informative_fraction((4, 5), (2, 2)) < 0.26
    assert 0.09 < informative_fraction((4, 5), (1, 1)) < 0.14
    rng = np.random.default_rng(1)
    for _ in range(100):   # exactly n bursts of exactly L frames (bursts in neighbouring parts may touch)
        types = frame_schedule(rng, 40, (3, 3), (2, 2))
        assert np.sum(types == INFORMATIVE) == 6


def test_bad_ranges_are_refused():
    for bad in ((0, 2), (3, 2), (-1, 1)):
        with pytest.raises(ValueError):
            frame_schedule(np.random.default_rng(0), 40, bad, (3, 5))
        with pytest.raises(ValueError):
            frame_schedule(np.random.default_rng(0), 40, (4, 5), bad)
    with pytest.raises(ValueError, match="min_frames"):   # two frames per burst part at least
        generate_toy_sparse_dataset("/nonexistent", bursts=(20, 20), **SMALL)
    assert _range_argument("2,3") == (2, 3) and _range_argument("4") == (4, 4)
    for bad in ("3,2", "0,1", "a,b", "1,2,3"):
        with pytest.raises(argparse.ArgumentTypeError):
            _range_argument(bad)


def test_meta_records_non_default_knobs_and_regenerates(tmp_path):
    out = str(tmp_path / "toy")
    info = generate_toy_sparse_dataset(out, seed=1, **SMALL)
    arguments = json.load(open(os.path.join(out, "toy_sparse_meta.json")))["arguments"]
    assert info["generated"] and "bursts" not in arguments and "burst_length" not in arguments
    assert not generate_toy_sparse_dataset(out, seed=1, bursts=BURSTS, burst_length=BURST_LENGTH, **SMALL)["generated"]
    readme = open(os.path.join(out, "README.txt")).read()
    assert "4-5 short bursts of 3-5 informative frames" in readme

    sparse = generate_toy_sparse_dataset(out, seed=1, bursts=(2, 2), burst_length=(3, 4), **SMALL)
    assert sparse["generated"]
    saved = json.load(open(os.path.join(out, "toy_sparse_meta.json")))
    assert saved["arguments"]["bursts"] == [2, 2] and saved["arguments"]["burst_length"] == [3, 4]
    assert saved["stats"]["fractions"]["informative"] < info["stats"]["fractions"]["informative"]
    assert "2-2 short bursts of 3-4 informative frames" in open(os.path.join(out, "README.txt")).read()
    assert not generate_toy_sparse_dataset(out, seed=1, bursts=(2, 2), burst_length=(3, 4), **SMALL)["generated"]
    assert generate_toy_sparse_dataset(out, seed=1, **SMALL)["generated"]   # back to the defaults: generated again
