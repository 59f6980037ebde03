"""Frame-index samplers: TSN segments, the reference's Something-Something and Kinetics rules, dense windows.

Notation: F frames in the video, T = num_segments, L = seg_length, K test clips, c = 0..K-1 the clip,
i = 0..T-1 the segment, R = dense_range, r = sampling_rate; indices are 0-based (the frame file of
index j is ``image_tmpl.format(j + 1)``: the reference's ``index_bias`` 1). ``round`` is numpy's
``np.round`` (half to even), ``int`` truncates toward zero, ``//`` floors. Randomness only comes from the
``numpy.random.Generator`` passed in; the reference's draws (``random.randint``, ``np.random.randint``)
are replaced by draws of the same distribution from that generator.

Rules, one per line (``data.sampling_protocol``; ``data.sampling: dense`` for the dense rows):

* tsn train:          avg = (F - L + 1) // T; start_i = i * avg + randint(avg)
                      (avg = 0: T sorted draws from range(F - L + 1) if F > T, else floor(i * F / T))
* tsn validation/test: tick = (F - L + 1) / T; start_i = int(tick * i + tick * (c + 1) / (K + 1))
                      (validation: K = 1, the segment middle)
* tsn dense train:    start = randint(max(F - T * r, 0) + 1); j_i = (start + i * r) mod F
* tsn dense test:     start_c = round(c * max(F - T * r, 0) / (K - 1)) (K = 1: max(F - T * r, 0) // 2);
                      j_i = (start_c + i * r) mod F
* sth train:          F > T * L: tick_i = i * F // T, start_i = tick_i + randint(tick_(i+1) - tick_i - L + 1),
                      L consecutive frames per segment; F <= T * L: sorted(0..F-1 and T * L - F draws from randint(F))
* sth validation:     seg = (F - 1) / T; j_i = int(round(seg * i)) + int(seg / 2)
* sth test:           seg = (F - 1) / T; j_i = int(round(seg * i)) + int(seg / (K + 1) * (c + 1))
* kinetics train:     seg = (F - 1) / T; j_i = uniform integer in [int(round(seg * i)), int(round(seg * (i + 1)))]
                      (inclusive)
* kinetics validation: j_i = int(F / T * i) mod F
* kinetics test:      s_c = int(linspace(0, F / T - 1, K)[c]); j_i = int(s_c + F / T * i) mod F
* sth/kinetics dense: stride = R // T; j_i = (start + i * stride) mod F
* sth/kinetics dense train: start = 0 if F <= R, else uniform integer in [0, F - R - 1]
* sth/kinetics dense test:  start_c = c * floor(max(F - R, 0) / (K - 1)); K = 1: start = max(F - R, 0) // 2
* sth/kinetics dense validation: the K = 1 test window, start = max(F - R, 0) // 2
* adaptive dense window (``data.dense_window: adaptive``) when the window W (R, or T * r for tsn) is longer than the
  video, F < W: stride s = max(F // T, 1), j_i = start + i * s with start in [0, L], L = max(F - 1 - (T - 1) * s, 0)
  (train: uniform; test: c * floor(L / (K - 1)), K = 1: L // 2); for F < T, j_i = floor(i * F / T). Frames stay in
  order and the K clips differ as far as the video allows; with F >= W it is the rule above

Where the reference leaves a case undefined or version-dependent this module decides:

* dense test with K = 1 divides by zero in the reference: the middle window is used;
* dense validation draws a random start in the reference: the deterministic K = 1 window is used instead;
* kinetics test for F < T: ``np.linspace(..., dtype=int)`` truncates toward zero under numpy 1.x (which the
  reference ran with) and floors under numpy >= 2; truncation is used, so every start is 0;
* seg_length L > 1: the reference defines it only for sth training (L consecutive frames per segment); every
  other sth/kinetics rule yields T starts, each expanded to the L frames start, start + 1, ..., clipped to the
  last frame (as the tsn rules do). Dense windows are one frame per segment (the config refuses L > 1 there).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROTOCOLS = ("tsn", "sth", "kinetics")
PROTOCOL_CHOICES = ("auto",) + PROTOCOLS
SOMETHING_SOMETHING_MARKERS = ("something", "sth", "ssv", "smth")


def is_something_something(dataset: str) -> bool:
    """True when the dataset name marks Something-Something: its lower-cased name contains one of
    ``something``, ``sth``, ``ssv``, ``smth`` (the reference tests ``'something' in dataset``)."""
    name = (dataset or "").lower()
    return any(marker in name for marker in SOMETHING_SOMETHING_MARKERS)


def resolve_protocol(protocol: str, dataset: str = "") -> str:
    """``data.sampling_protocol`` -> one of PROTOCOLS: ``auto`` is sth for Something-Something, else kinetics
    (the reference imports datasets/sth.py or datasets/kinetics.py the same way)."""
    if protocol == "auto":
        return "sth" if is_something_something(dataset) else "kinetics"
    if protocol not in PROTOCOLS:
        raise ValueError(f"sampling protocol must be one of {PROTOCOL_CHOICES}, got {protocol!r}")
    return protocol


def expand_segments(starts: np.ndarray, seg_length: int, num_frames: int) -> np.ndarray:
    """``start_k + j`` for j < L, segment-major, clipped to the last frame."""
    offsets = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seg_length, dtype=np.int64)
    return np.clip(offsets, 0, num_frames - 1).reshape(-1)


# -- tsn (TSN / TSM) ----------------------------------------------------------------------------------------------
def segment_train_starts(num_frames: int, num_segments: int, seg_length: int,
                         rng: np.random.Generator) -> np.ndarray:
    """TSN training starts: a random offset inside each of T equal segments.

    * ``avg = (F - L + 1) // T > 0``: ``start_k = k * avg + randint(avg)``;
    * else if ``F > T``: T sorted random starts from ``range(F - L + 1)``, drawn with replacement
      (as in TSN/TSM: here ``F - L + 1 < T``, so T distinct starts do not exist);
    * else (video not longer than T): ``start_k = floor(k * F / T)``, repeating frames.

    The last ``(F - L + 1) mod T`` start positions are never drawn (TSN's truncated segments).
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
    """tsn: a window of T frames at stride ``rate`` from a random start, wrapping for short videos."""
    start = int(rng.integers(max(num_frames - num_segments * sampling_rate, 0) + 1))
    return (start + np.arange(num_segments) * sampling_rate) % num_frames


def dense_test_starts(num_frames: int, num_segments: int, sampling_rate: int, num_clips: int = 1) -> list[int]:
    """tsn window starts for K test clips: evenly from the first to the last full window (K = 1: the middle)."""
    last_start = max(num_frames - num_segments * sampling_rate, 0)
    if num_clips == 1:
        return [last_start // 2]
    return [int(round(c * last_start / (num_clips - 1))) for c in range(num_clips)]


def dense_test_indices(num_frames: int, num_segments: int, sampling_rate: int,
                       clip: int = 0, num_clips: int = 1) -> np.ndarray:
    start = dense_test_starts(num_frames, num_segments, sampling_rate, num_clips)[clip]
    return (start + np.arange(num_segments) * sampling_rate) % num_frames


# -- sth (reference datasets/sth.py) -------------------------------------------------------------------------------
def sth_train_indices(num_frames: int, num_segments: int, seg_length: int,
                      rng: np.random.Generator) -> np.ndarray:
    """sth training, ``[T * L]`` indices (``_sample_indices``).

    ``F > T * L``: segment i is ``[i * F // T, (i + 1) * F // T)``; its L consecutive frames start at a
    uniform position that keeps them inside it. ``F <= T * L``: every frame once plus ``T * L - F`` uniform
    draws from ``range(F)``, sorted.
    """
    total = num_segments * seg_length
    if num_frames <= total:
        extra = rng.integers(num_frames, size=total - num_frames)
        return np.sort(np.concatenate([np.arange(num_frames, dtype=np.int64), extra.astype(np.int64)]))
    ticks = np.arange(num_segments + 1, dtype=np.int64) * num_frames // num_segments
    lengths = np.diff(ticks)
    # F > T * L makes every segment at least L long (floor(F / T) >= L), so each draw has a non-empty range
    starts = ticks[:-1] + rng.integers(0, lengths - seg_length + 1)
    return expand_segments(starts, seg_length, num_frames)


def _segment_lefts(num_frames: int, num_segments: int) -> tuple[float, np.ndarray]:
    """``seg = (F - 1) / T`` and ``int(round(seg * i))`` for i = 0..T (numpy rounds half to even)."""
    seg = (num_frames - 1) / num_segments
    return seg, np.rint(seg * np.arange(num_segments + 1)).astype(np.int64)


def sth_val_starts(num_frames: int, num_segments: int) -> np.ndarray:
    """sth validation ('ATM' rule, ``_get_val_indices``): ``int(round(seg * i)) + int(seg / 2)``, seg = (F-1)/T."""
    seg, lefts = _segment_lefts(num_frames, num_segments)
    return lefts[:-1] + int(seg / 2)


def sth_test_starts(num_frames: int, num_segments: int, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """sth test clip c of K (``_get_test_indices``): ``int(round(seg * i)) + int(seg / (K + 1) * (c + 1))``."""
    seg, lefts = _segment_lefts(num_frames, num_segments)
    duration = seg / (num_clips + 1)
    return lefts[:-1] + int(duration * (clip + 1))


# -- kinetics (reference datasets/kinetics.py) ---------------------------------------------------------------------
def kinetics_train_starts(num_frames: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """kinetics training ('ATM' rule): a uniform integer in ``[int(round(seg * i)), int(round(seg * (i + 1)))]``,
    both ends included, seg = (F - 1) / T; neighbouring ranges share their boundary frame."""
    _, lefts = _segment_lefts(num_frames, num_segments)
    return rng.integers(lefts[:-1], lefts[1:] + 1)


def kinetics_val_starts(num_frames: int, num_segments: int) -> np.ndarray:
    """kinetics validation: ``int(F / T * i) mod F``."""
    tick = num_frames / num_segments
    return np.array([int(tick * i) % num_frames for i in range(num_segments)], dtype=np.int64)


def kinetics_test_starts(num_frames: int, num_segments: int, clip: int = 0, num_clips: int = 1) -> np.ndarray:
    """kinetics test clip c of K: ``int(s_c + F / T * i) mod F`` with ``s_c = int(linspace(0, F / T - 1, K)[c])``
    (truncated toward zero, as numpy 1.x does for ``dtype=int``)."""
    tick = num_frames / num_segments
    shift = int(float(np.linspace(0, tick - 1, num=num_clips)[clip]))
    return np.array([int(shift + tick * i) % num_frames for i in range(num_segments)], dtype=np.int64)


# -- reference dense windows (sth and kinetics) --------------------------------------------------------------------
def window_indices(num_frames: int, num_segments: int, dense_range: int, start: int) -> np.ndarray:
    """``(start + i * (R // T)) mod F``: T frames at stride R // T, wrapping around short videos."""
    return (start + np.arange(num_segments, dtype=np.int64) * (dense_range // num_segments)) % num_frames


def window_train_start(num_frames: int, dense_range: int, rng: np.random.Generator) -> int:
    """Reference dense training start: 0 if ``F <= R``, else uniform in ``[0, F - R - 1]`` (the reference's
    ``np.random.randint(0, F - R)`` never picks the last full window's start ``F - R``)."""
    if num_frames <= dense_range:
        return 0
    return int(rng.integers(num_frames - dense_range))


def window_test_starts(num_frames: int, dense_range: int, num_clips: int = 1) -> list[int]:
    """Reference dense test starts: ``c * floor(max(F - R, 0) / (K - 1))``; K = 1 (a division by zero in the
    reference): the middle window, ``max(F - R, 0) // 2``."""
    last_start = max(num_frames - dense_range, 0)
    if num_clips == 1:
        return [last_start // 2]
    step = last_start // (num_clips - 1)
    return [c * step for c in range(num_clips)]


# -- the adaptive dense window (frames in order for videos shorter than the window) -------------------------------
DENSE_WINDOWS = ("reference", "adaptive")


def adaptive_indices(num_frames: int, num_segments: int, start: int) -> np.ndarray:
    """T frames at stride ``max(F // T, 1)`` from ``start`` (F >= T), or ``floor(i * F / T)`` (F < T): in order."""
    if num_frames < num_segments:
        return (np.arange(num_segments, dtype=np.int64) * num_frames) // num_segments
    stride = num_frames // num_segments
    return start + np.arange(num_segments, dtype=np.int64) * stride


def adaptive_last_start(num_frames: int, num_segments: int) -> int:
    if num_frames < num_segments:
        return 0
    return max(num_frames - 1 - (num_segments - 1) * (num_frames // num_segments), 0)


def adaptive_test_starts(num_frames: int, num_segments: int, num_clips: int = 1) -> list[int]:
    last = adaptive_last_start(num_frames, num_segments)
    if num_clips == 1:
        return [last // 2]
    return [c * (last // (num_clips - 1)) for c in range(num_clips)]


@dataclass(frozen=True)
class FrameSampler:
    """Chooses the frame indices of the clips taken from one video.

    ``protocol`` is one of PROTOCOLS (resolve ``auto`` first with :func:`resolve_protocol`); ``dense``
    selects the dense window of the protocol: stride ``sampling_rate`` for tsn, ``dense_range // T`` for
    sth/kinetics. Segment mode yields ``T * L`` indices per clip, dense mode ``T``.
    ``random_shift=False`` makes :meth:`train` return the validation indices (dense tsn keeps its random
    window, as TSM does). ``dense_window``: ``reference`` wraps a window longer than the video around
    (``mod F``, frames out of order, as the reference); ``adaptive`` shrinks it to the video.
    """

    num_segments: int
    seg_length: int = 1
    dense: bool = False
    sampling_rate: int = 8
    random_shift: bool = True
    protocol: str = "tsn"
    dense_range: int = 128
    dense_window: str = "reference"

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"FrameSampler.protocol must be one of {PROTOCOLS} (resolve 'auto' with "
                             f"resolve_protocol), got {self.protocol!r}")
        if self.dense_window not in DENSE_WINDOWS:
            raise ValueError(f"FrameSampler.dense_window must be one of {DENSE_WINDOWS}, got {self.dense_window!r}")
        for name in ("num_segments", "seg_length", "sampling_rate", "dense_range"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"FrameSampler.{name} must be a positive integer, got {getattr(self, name)!r}")

    @property
    def frames_per_clip(self) -> int:
        return self.num_segments if self.dense else self.num_segments * self.seg_length

    @staticmethod
    def _check_frames(num_frames: int) -> None:
        if num_frames < 1:
            raise ValueError(f"cannot sample frames from a video of {num_frames} frames")

    def _expand(self, starts: np.ndarray, num_frames: int) -> np.ndarray:
        return expand_segments(starts, self.seg_length, num_frames)

    @property
    def dense_window_frames(self) -> int:
        """W: the frames a dense window spans (tsn: T * rate; sth/kinetics: dense_range)."""
        return self.num_segments * self.sampling_rate if self.protocol == "tsn" else self.dense_range

    def _adaptive(self, num_frames: int) -> bool:
        """The adaptive window applies: asked for, dense, and the video shorter than the window."""
        return self.dense and self.dense_window == "adaptive" and num_frames < self.dense_window_frames

    def train(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """Indices ``[frames_per_clip]`` of one training clip (the validation indices without random_shift)."""
        self._check_frames(num_frames)
        T = self.num_segments
        if self._adaptive(num_frames) and (self.random_shift or self.protocol == "tsn"):
            start = int(rng.integers(adaptive_last_start(num_frames, T) + 1))
            return adaptive_indices(num_frames, T, start)
        if self.protocol == "tsn":
            if self.dense:
                return dense_train_indices(num_frames, T, self.sampling_rate, rng)
            if not self.random_shift:
                return self.validation(num_frames)
            return self._expand(segment_train_starts(num_frames, T, self.seg_length, rng), num_frames)
        if not self.random_shift:
            return self.validation(num_frames)
        if self.dense:
            start = window_train_start(num_frames, self.dense_range, rng)
            return window_indices(num_frames, T, self.dense_range, start)
        if self.protocol == "sth":
            return sth_train_indices(num_frames, T, self.seg_length, rng)
        return self._expand(kinetics_train_starts(num_frames, T, rng), num_frames)

    def validation(self, num_frames: int) -> np.ndarray:
        """Indices ``[frames_per_clip]`` of the validation clip (always equal to ``test(num_frames, 1)[0]``)."""
        self._check_frames(num_frames)
        T = self.num_segments
        if self._adaptive(num_frames):
            return adaptive_indices(num_frames, T, adaptive_test_starts(num_frames, T)[0])
        if self.protocol == "tsn":
            if self.dense:
                return dense_test_indices(num_frames, T, self.sampling_rate)
            return self._expand(segment_test_starts(num_frames, T, self.seg_length), num_frames)
        if self.dense:
            return window_indices(num_frames, T, self.dense_range, window_test_starts(num_frames, self.dense_range)[0])
        if self.protocol == "sth":
            return self._expand(sth_val_starts(num_frames, T), num_frames)
        return self._expand(kinetics_val_starts(num_frames, T), num_frames)

    def test(self, num_frames: int, num_clips: int = 1) -> np.ndarray:
        """Indices ``[num_clips, frames_per_clip]`` of the deterministic evaluation clips."""
        self._check_frames(num_frames)
        if num_clips < 1:
            raise ValueError(f"num_clips must be a positive integer, got {num_clips}")
        T, F = self.num_segments, num_frames
        if self._adaptive(F):
            return np.stack([adaptive_indices(F, T, start) for start in adaptive_test_starts(F, T, num_clips)])
        if self.dense:
            if self.protocol == "tsn":
                clips = [dense_test_indices(F, T, self.sampling_rate, c, num_clips) for c in range(num_clips)]
            else:
                clips = [window_indices(F, T, self.dense_range, start)
                         for start in window_test_starts(F, self.dense_range, num_clips)]
            return np.stack(clips)
        if self.protocol == "tsn":
            starts = [segment_test_starts(F, T, self.seg_length, c, num_clips) for c in range(num_clips)]
        elif self.protocol == "sth":
            starts = [sth_test_starts(F, T, c, num_clips) for c in range(num_clips)]
        else:
            starts = [kinetics_test_starts(F, T, c, num_clips) for c in range(num_clips)]
        return np.stack([self._expand(s, F) for s in starts])
