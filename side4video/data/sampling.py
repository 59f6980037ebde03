"""Frame-index samplers (TSN segments and dense windows); pure functions of their arguments.

Notation: F frames in the video, T = num_segments, L = seg_length, indices 0-based (the frame
file of index i is ``image_tmpl.format(i + 1)``). Randomness only comes from the
``numpy.random.Generator`` passed in, so a sample is reproducible from its generator's seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def expand_segments(starts: np.ndarray, seg_length: int, num_frames: int) -> np.ndarray:
    """``start_k + j`` for j < L, segment-major, clipped to the last frame."""
    offsets = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seg_length, dtype=np.int64)
    return np.clip(offsets, 0, num_frames - 1).reshape(-1)


def segment_train_starts(num_frames: int, num_segments: int, seg_length: int,
                         rng: np.random.Generator) -> np.ndarray:
    """TSN training starts: a random offset inside each of T equal segments.

    * ``avg = (F - L + 1) // T > 0``: ``start_k = k * avg + randint(avg)``;
    * else if ``F > T``: T sorted random starts from ``range(F - L + 1)``, drawn with replacement
      (as in TSN/TSM: here ``F - L + 1 < T``, so T distinct starts do not exist);
    * else (video not longer than T): ``start_k = floor(k * F / T)``, repeating frames.
    """
    valid_starts = num_frames - seg_length + 1
    average = valid_starts // num_segments
    if average > 0:
        return np.arange(num_segments) * average + rng.integers(average, size=num_segments)
    if num_frames > num_segments and valid_starts > 0:
        return np.sort(rng.integers(valid_starts, size=num_segments))
    return (np.arange(num_segments) * num_frames) // num_segments


def segment_test_starts(num_frames: int, num_segments: int, seg_length: int,
                        clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """Deterministic TSN starts: ``start_k = int(tick * k + tick * (c + 1) / (K + 1))``.

    ``tick = (F - L + 1) / T``; clip c of K sits at fraction ``(c + 1) / (K + 1)`` of each
    segment, so K = 1 is the segment middle (the TSN validation rule) and K clips are spread evenly.
    """
    tick = max(num_frames - seg_length + 1, 1) / num_segments
    fraction = (clip + 1) / (num_clips + 1)
    return np.array([int(tick * k + tick * fraction) for k in range(num_segments)], dtype=np.int64)


def dense_train_indices(num_frames: int, num_segments: int, sampling_rate: int,
                        rng: np.random.Generator) -> np.ndarray:
    """A window of T frames at stride ``rate`` from a random start, wrapping for short videos."""
    start = int(rng.integers(max(num_frames - num_segments * sampling_rate, 0) + 1))
    return (start + np.arange(num_segments) * sampling_rate) % num_frames


def dense_test_starts(num_frames: int, num_segments: int, sampling_rate: int, num_clips: int = 1) -> list[int]:
    """Window starts for K test clips: evenly from the first to the last full window (K = 1: the middle)."""
    last_start = max(num_frames - num_segments * sampling_rate, 0)
    if num_clips == 1:
        return [last_start // 2]
    return [int(round(c * last_start / (num_clips - 1))) for c in range(num_clips)]


def dense_test_indices(num_frames: int, num_segments: int, sampling_rate: int,
                       clip: int = 0, num_clips: int = 1) -> np.ndarray:
    start = dense_test_starts(num_frames, num_segments, sampling_rate, num_clips)[clip]
    return (start + np.arange(num_segments) * sampling_rate) % num_frames


@dataclass(frozen=True)
class FrameSampler:
    """Chooses the frame indices of the clips taken from one video.

    Segment mode yields ``T * L`` indices per clip, dense mode ``T``.
    """

    num_segments: int
    seg_length: int = 1
    dense: bool = False
    sampling_rate: int = 8
    random_shift: bool = True

    @property
    def frames_per_clip(self) -> int:
        return self.num_segments if self.dense else self.num_segments * self.seg_length

    def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Indices ``[frames_per_clip]`` of one training clip."""
        if self.dense:
            return dense_train_indices(num_frames, self.num_segments, self.sampling_rate, rng)
        if self.random_shift:
            starts = segment_train_starts(num_frames, self.num_segments, self.seg_length, rng)
        else:
            starts = segment_test_starts(num_frames, self.num_segments, self.seg_length)
        return expand_segments(starts, self.seg_length, num_frames)

    def test(self, num_frames: int, num_clips: int = 1) -> np.ndarray:
        """Indices ``[num_clips, frames_per_clip]`` of the deterministic evaluation clips."""
        if self.dense:
            clips = [dense_test_indices(num_frames, self.num_segments, self.sampling_rate, c, num_clips)
                     for c in range(num_clips)]
        else:
            clips = [expand_segments(segment_test_starts(num_frames, self.num_segments, self.seg_length, c, num_clips),
                                     self.seg_length, num_frames)
                     for c in range(num_clips)]
        return np.stack(clips)
