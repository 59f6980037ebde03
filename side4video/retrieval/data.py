"""Frames for text–video retrieval: the reference's frame sampling per dataset, its resize and centre crop, and the
datasets that pair videos with captions (training: one item per caption; evaluation: videos and captions apart).

Frame sampling (``max_frames`` = K, F frames in the video; indices 0-based here, the reference's frame files are
1-based):

* ``segment_random`` (training, the reference's strategy 3): K equal segments of ``F // K`` frames, one frame at a
  uniform position in each;
* ``stride`` (testing MSR-VTT, MSVD, DiDeMo, ActivityNet: strategy 1): every ``F // K``-th frame from 0, which gives
  K or more frames, then ``slice_framepos`` picks K of them: 0 the first K, 1 the last K, 2 evenly spread
  (``linspace(0, n - 1, K)`` truncated, the reference's default);
* ``segment_middle`` (testing VATEX: strategy 4): the middle frame of each of K equal segments.

A video with fewer than K frames gives frame ``floor(k * F / K)`` for k = 0..K-1 (every frame, repeated evenly, in
order) in all three modes. The reference differs there: it treats any frame folder of fewer than 30 frames as 30
frames long and reads files that do not exist; this toolkit never pads with frames a video does not have.

The reference resizes the short side to the input size (bicubic) and centre-crops, at training and at test time
(no augmentation); here the resize is the package's antialiased bilinear one (``data.transforms.resize_clip``).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.decoders import VideoReadError, open_reader
from ..data.lists import VideoRecord
from ..data.transforms import center_box, crop_resize, resize_clip
from .annotations import CaptionSet, video_location

SAMPLING_MODES = ("segment_random", "stride", "segment_middle")
#: the reference's test sampling per dataset (training always uses ``segment_random``)
TEST_SAMPLING = {"msrvtt": "stride", "msvd": "stride", "didemo": "stride", "activitynet": "stride",
                 "vatex": "segment_middle", "jsonl": "stride"}
VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mkv", ".m4v", ".mov")


def sample_frames(num_frames: int, max_frames: int, mode: str, *, rng: np.random.Generator | None = None,
                  slice_framepos: int = 2) -> np.ndarray:
    """K = ``max_frames`` 0-based frame indices of a video of ``num_frames`` frames (see the module's docstring)."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling mode must be one of {', '.join(SAMPLING_MODES)}, got {mode!r}")
    if num_frames < 1 or max_frames < 1:
        raise ValueError(f"cannot sample {max_frames} frames from a video of {num_frames} frames")
    if slice_framepos not in (0, 1, 2):
        raise ValueError(f"slice_framepos must be 0 (head), 1 (tail) or 2 (uniform), got {slice_framepos!r}")
    k = np.arange(max_frames)
    if num_frames < max_frames:
        return (k * num_frames) // max_frames
    if mode == "segment_random":
        if rng is None:
            raise ValueError("segment_random sampling needs a random generator")
        length = num_frames // max_frames
        return k * length + rng.integers(0, length, size=max_frames)
    if mode == "segment_middle":
        tick = num_frames / max_frames
        return (tick / 2 + tick * k).astype(np.int64)
    strided = np.arange(0, num_frames, num_frames // max_frames)
    if len(strided) <= max_frames:
        return strided
    if slice_framepos == 0:
        return strided[:max_frames]
    if slice_framepos == 1:
        return strided[-max_frames:]
    return strided[np.linspace(0, len(strided) - 1, num=max_frames, dtype=int)]


def centre_view(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[T, 3, H, W]`` → ``[T, 3, size, size]``: short side resized to ``size``, then the centre square."""
    height, width = frames.shape[-2:]
    scale = size / min(height, width)
    shape = (max(size, round(height * scale)), max(size, round(width * scale)))
    frames = resize_clip(frames, shape)
    return crop_resize(frames, center_box(shape[0], shape[1], size), size)


def _frame_count(directory: str, image_tmpl: str) -> int:
    """Frames in a folder of 1-indexed images named by ``image_tmpl`` (counted up to the first missing one)."""
    try:
        present = len(os.listdir(directory))
    except OSError:
        raise VideoReadError(directory, "frame folder not found") from None
    count = present
    while count > 0 and not os.path.isfile(os.path.join(directory, image_tmpl.format(count))):
        count -= 1   # other files in the folder: the count is the last frame number present
    return count


class RetrievalVideos(Dataset):
    """Videos of a :class:`CaptionSet` as uint8 clips ``[K, 3, S, S]`` (decoded by the package's readers).

    ``features_path``: the folder the ids live in (frame folders or video files; the reference's argument name);
    paths in the JSON-lines format are relative to it too.
    """

    def __init__(self, captions: CaptionSet, features_path: str, *, max_frames: int = 12, input_size: int = 224,
                 mode: str = "stride", slice_framepos: int = 2, image_tmpl: str = "img_{:05d}.jpg",
                 video_backend: str = "pyav", seed: int = 0):
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {', '.join(SAMPLING_MODES)}, got {mode!r}")
        self.captions = captions
        self.features_path = str(features_path)
        self.max_frames, self.input_size = int(max_frames), int(input_size)
        self.mode, self.slice_framepos = mode, int(slice_framepos)
        self.image_tmpl, self.video_backend, self.seed = image_tmpl, video_backend, int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()   # seen by forked workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.captions.videos)

    def location(self, video: int) -> str:
        return video_location(self.features_path, self.captions.videos[video], VIDEO_EXTENSIONS)

    def clip(self, video: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The video's K frames, resized and centre-cropped (raises VideoReadError when it cannot be read)."""
        path = self.location(video)
        if os.path.isdir(path):
            record = VideoRecord(path=path, num_frames=_frame_count(path, self.image_tmpl), label=0, is_video=False)
        else:
            record = VideoRecord(path=path, num_frames=None, label=0, is_video=True)
        with open_reader(record, "", image_tmpl=self.image_tmpl, video_backend=self.video_backend) as reader:
            indices = sample_frames(reader.num_frames, self.max_frames, self.mode, rng=rng,
                                    slice_framepos=self.slice_framepos)
            frames = reader.read(indices)
        return centre_view(frames, self.input_size)

    def __getitem__(self, video: int) -> dict[str, Any]:
        """An evaluation item: the video's clip, or zeros and ``valid=False`` when it cannot be read."""
        try:
            frames, valid, errors = self.clip(video), True, []
        except VideoReadError as error:
            frames = torch.zeros(self.max_frames, 3, self.input_size, self.input_size, dtype=torch.uint8)
            valid, errors = False, [(error.path, error.reason)]
        return dict(frames=frames, index=video, video_id=self.captions.videos[video], valid=valid, errors=errors)


class CaptionedClips(Dataset):
    """Training items, one per caption (every caption of a multi-caption video is its own item, the reference's
    ``expand_msrvtt_sentences``): the caption's video sampled ``segment_random`` from ``(seed, epoch, index)``.

    An unreadable video is replaced by the video of another caption drawn from the same generator (at most
    ``max_retries`` times), so one bad file neither stops training nor changes other samples."""

    def __init__(self, videos: RetrievalVideos, *, max_retries: int = 10):
        self.videos = videos
        self.max_retries = int(max_retries)

    def set_epoch(self, epoch: int) -> None:
        self.videos.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.videos.captions.captions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        captions = self.videos.captions
        caption, errors = index, []
        for retry in range(self.max_retries + 1):
            rng = np.random.default_rng([self.videos.seed, int(self.videos._epoch.item()), index, retry])
            if retry > 0:
                caption = int(rng.integers(len(captions.captions)))
            video = captions.caption_video[caption]
            try:
                frames = self.videos.clip(video, rng)
            except VideoReadError as error:
                errors.append((error.path, error.reason))
                continue
            return dict(frames=frames, caption=captions.captions[caption], caption_index=caption, video=video,
                        index=index, errors=errors)
        raise VideoReadError(self.videos.location(captions.caption_video[index]),
                             f"training caption {index}: the video and {self.max_retries} replacements are all "
                             f"unreadable: " + "; ".join(f"{path}: {reason}" for path, reason in errors))


def collate_captioned(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Training batch: ``frames [B, K, 3, S, S]`` uint8, ``captions`` (texts), ``caption_index`` / ``video`` /
    ``index`` int64 ``[B]``, ``errors`` and ``num_samples``."""
    return dict(frames=torch.stack([s["frames"] for s in samples]),
                captions=[s["caption"] for s in samples],
                caption_index=torch.tensor([s["caption_index"] for s in samples], dtype=torch.int64),
                video=torch.tensor([s["video"] for s in samples], dtype=torch.int64),
                index=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
                errors=[error for s in samples for error in s["errors"]], num_samples=len(samples))


def collate_videos(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Evaluation batch: ``frames [B, K, 3, S, S]``, ``index [B]``, ``video_id``, ``valid [B]``, ``errors``."""
    return dict(frames=torch.stack([s["frames"] for s in samples]),
                index=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
                video_id=[s["video_id"] for s in samples],
                valid=torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
                errors=[error for s in samples for error in s["errors"]])


__all__ = ["SAMPLING_MODES", "TEST_SAMPLING", "sample_frames", "centre_view", "RetrievalVideos", "CaptionedClips",
           "collate_captioned", "collate_videos"]
