"""VideoDataset: annotated videos -> sampled, augmented uint8 clips; and ``build_dataset`` from ``cfg.data``.

Randomness: every training sample draws from ``np.random.default_rng([seed, epoch, index, retry])``,
so a sample depends on nothing else (not on workers, ranks, or where training resumed). The epoch
lives in shared memory, so ``set_epoch`` reaches DataLoader workers that are already running
(``persistent_workers=True``); call it before iterating the loader, as for the sampler.

Unreadable data: in training the failure is recorded in the sample's ``errors``, logged, and the
sample is replaced by another video chosen from the same generator; in evaluation the sample comes
back with ``valid=False`` and zero frames.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .decoders import VIDEO_BACKENDS, VideoReadError, open_reader
from .lists import VideoRecord, read_annotation_list, read_label_names
from .sampling import FrameSampler
from .transforms import ClipRandAugment, EvalViews, TrainAugmentation, resolve_scale_size

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class _BadInputLog:
    """Warn about the first ``first`` bad inputs of this process, then every ``every``-th."""

    def __init__(self, first: int = 20, every: int = 100):
        self.first, self.every, self.count = first, every, 0

    def warn(self, path: str, reason: str, action: str) -> None:
        self.count += 1
        if self.count <= self.first or self.count % self.every == 0:
            suffix = f" [{self.count} unreadable inputs so far in this process]" if self.count > self.first else ""
            logger.warning("unreadable input %s: %s; %s%s", path, reason, action, suffix)


_bad_input_log = _BadInputLog()


class VideoDataset(Dataset):
    """Clips sampled from annotated videos.

    ``ds[i]`` is a dict:

    * ``frames``: uint8 ``[V, n, 3, S, S]`` with n frames per clip (``T * seg_length``; T for dense
      sampling) and V views: ``num_sample`` augmentations of the same frames (train) or
      ``num_clips * num_crops`` deterministic views, clip-major (``view = clip * num_crops + crop``);
    * ``label``: int64 ``[V]``, per view (a flipped view of a left/right class carries the mirrored class);
    * ``index``: i (also when an unreadable training video was replaced); ``video_id``: the listed path
      of the video actually used; ``valid``: False for an unreadable evaluation video;
      ``errors``: ``(path, reason)`` of every failed read behind this sample.
    """

    def __init__(self, records: Sequence[VideoRecord], root: str, *, split: str, sampler: FrameSampler,
                 transform: TrainAugmentation | EvalViews, class_names: Sequence[str],
                 image_tmpl: str = "img_{:05d}.jpg", video_backend: str = "decord", num_sample: int = 1,
                 num_clips: int = 1, flip_pairs: Sequence[Sequence[int]] = (), max_retries: int = 10,
                 seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if (split == "train") != isinstance(transform, TrainAugmentation):
            raise TypeError("the train split takes a TrainAugmentation, val/test take EvalViews")
        if video_backend not in VIDEO_BACKENDS:
            raise ValueError(f"data.video_backend must be one of {VIDEO_BACKENDS}, got {video_backend!r}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not records:
            raise ValueError("VideoDataset needs at least one record")
        self.records = list(records)
        self.root = root
        self.split = split
        self.sampler = sampler
        self.transform = transform
        self.class_names = list(class_names)
        self.image_tmpl = image_tmpl
        self.video_backend = video_backend
        self.num_sample = num_sample
        self.num_clips = 1 if split == "train" else num_clips
        self.flip_label = _flip_label_map(flip_pairs, len(self.class_names))
        self.max_retries = max_retries
        self.seed = seed
        # shared memory: workers forked earlier (persistent_workers) still see set_epoch
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def training(self) -> bool:
        return self.split == "train"

    @property
    def num_views(self) -> int:
        return self.num_sample if self.training else self.num_clips * self.transform.num_crops

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._train_item(index) if self.training else self._eval_item(index)

    def _rng(self, index: int, retry: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, retry])

    def _labels(self, label: int, flipped: Sequence[bool]) -> torch.Tensor:
        return torch.tensor([self.flip_label.get(label, label) if f else label for f in flipped], dtype=torch.int64)

    def _train_item(self, index: int) -> dict[str, Any]:
        errors: list[tuple[str, str]] = []
        tried = [index]
        for retry in range(self.max_retries + 1):
            rng = self._rng(index, retry)
            if retry > 0:
                tried.append(self._replacement(rng, tried))
            record = self.records[tried[-1]]
            try:
                with open_reader(record, self.root, image_tmpl=self.image_tmpl,
                                 video_backend=self.video_backend) as reader:
                    frames = reader.read(self.sampler.train(reader.num_frames, rng))
            except VideoReadError as error:
                errors.append((error.path, error.reason))
                _bad_input_log.warn(error.path, error.reason, "replaced by another training video")
                continue
            views, flipped = zip(*(self.transform(frames, rng) for _ in range(self.num_sample)))
            return dict(frames=torch.stack(views), label=self._labels(record.label, flipped), index=index,
                        video_id=record.path, valid=True, errors=errors)
        listing = "\n  ".join(f"{path}: {reason}" for path, reason in errors)
        raise RuntimeError(f"training sample {index}: the video and {self.max_retries} replacements are all "
                           f"unreadable (data.max_retries={self.max_retries}):\n  {listing}")

    def _replacement(self, rng: np.random.Generator, tried: Sequence[int]) -> int:
        """A different video, drawn from the sample's own generator; avoids videos already tried."""
        candidate = int(rng.integers(len(self.records)))
        for _ in range(16):
            if candidate not in tried or len(tried) >= len(self.records):
                break
            candidate = int(rng.integers(len(self.records)))
        return candidate

    def _eval_item(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        size = self.transform.input_size
        try:
            with open_reader(record, self.root, image_tmpl=self.image_tmpl,
                             video_backend=self.video_backend) as reader:
                indices = self.sampler.test(reader.num_frames, self.num_clips)  # [K, n]
                frames = reader.read(indices.reshape(-1))
        except VideoReadError as error:
            _bad_input_log.warn(error.path, error.reason, "evaluated as invalid")
            frames = torch.zeros(self.num_views, self.sampler.frames_per_clip, 3, size, size, dtype=torch.uint8)
            return dict(frames=frames, label=torch.full((self.num_views,), record.label, dtype=torch.int64),
                        index=index, video_id=record.path, valid=False, errors=[(error.path, error.reason)],
                        flipped=torch.zeros(self.num_views, dtype=torch.bool))
        # crop all clips at once, then reorder [crop, clip, frame] -> [clip * crop, frame]
        views, flipped = self.transform(frames)  # [C, K * n, 3, S, S]
        views = views.unflatten(1, indices.shape).transpose(0, 1)  # [K, C, n, 3, S, S]
        views = views.reshape(self.num_views, indices.shape[1], 3, size, size)
        view_flipped = list(flipped) * self.num_clips          # view = clip * crops + crop
        return dict(frames=views, label=self._labels(record.label, view_flipped), index=index,
                    video_id=record.path, valid=True, errors=[], flipped=torch.tensor(view_flipped))

    def flip_permutation(self) -> torch.Tensor | None:
        """Class permutation that maps scores of a flipped view back (left/right pairs swapped); None without pairs."""
        if not self.flip_label:
            return None
        permutation = torch.arange(len(self.class_names))
        for source, target in self.flip_label.items():
            permutation[source] = target
        return permutation


def _flip_label_map(flip_pairs: Sequence[Sequence[int]], num_classes: int) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for pair in flip_pairs or ():
        if len(pair) != 2:
            raise ValueError(f"data.flip_pairs entries must be [a, b] pairs, got {list(pair)!r}")
        a, b = int(pair[0]), int(pair[1])
        for label in (a, b):
            if not 0 <= label < num_classes:
                raise ValueError(f"data.flip_pairs label {label} is outside [0, {num_classes})")
            if label in mapping:
                raise ValueError(f"data.flip_pairs lists label {label} twice")
        mapping[a], mapping[b] = b, a
    return mapping


class _DataConfig:
    """Attribute access to ``cfg.data`` with the schema's defaults for keys the config leaves out."""

    def __init__(self, data_cfg: Any):
        from side4video.config.schema import SCHEMA

        self._cfg = data_cfg
        self._schema = SCHEMA["data"]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        if key not in self._schema:
            raise KeyError(f"data.{key} is not a key of the config schema")
        missing = object()
        if isinstance(self._cfg, Mapping):
            value = self._cfg.get(key, missing)
        else:
            value = getattr(self._cfg, key, missing)
        # an empty mapping is what DotMap returns for a key nobody set
        if value is missing or (isinstance(value, Mapping) and not value):
            return self._schema[key].default
        return value


def build_dataset(data_cfg: Any, split: str, *, test_crops: int | None = None, test_clips: int | None = None,
                  dense: bool | None = None, seed: int = 0) -> VideoDataset:
    """The dataset of ``split`` ('train', 'val' or 'test') described by ``cfg.data``.

    'val' is one centre crop of one clip (validation during training); 'test' has
    ``test_crops x test_clips`` views. ``test_crops``/``test_clips``/``dense`` override the config
    (``dense=True`` means ``sampling: dense``). Raises FileNotFoundError / ValueError, naming the file
    and line, for missing or malformed inputs.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cfg = _DataConfig(data_cfg)
    if cfg.rand_erase:
        raise NotImplementedError("data.rand_erase=True is not supported (random erasing is not implemented); "
                                  "set data.rand_erase: False")
    if cfg.modality != "RGB":
        raise ValueError(f"data.modality must be 'RGB', got {cfg.modality!r}")

    prefix = "train" if split == "train" else "val"
    list_file, root = getattr(cfg, f"{prefix}_list"), getattr(cfg, f"{prefix}_root")
    if not list_file:
        raise ValueError(f"data.{prefix}_list is not set")
    if root and not os.path.isdir(root):
        raise FileNotFoundError(f"data.{prefix}_root directory not found: {root}")

    class_names = read_label_names(cfg.label_list) if cfg.label_list else None
    num_classes = cfg.num_classes if cfg.num_classes is not None else (class_names and len(class_names))
    if not num_classes:
        raise ValueError("data.num_classes is required (or give data.label_list)")
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"data.label_list {cfg.label_list} names {len(class_names)} classes "
                         f"but data.num_classes is {num_classes}")
    class_names = class_names or [str(i) for i in range(num_classes)]
    records = read_annotation_list(list_file, num_classes=num_classes)

    if cfg.sampling not in ("segment", "dense"):
        raise ValueError(f"data.sampling must be 'segment' or 'dense', got {cfg.sampling!r}")
    use_dense = cfg.sampling == "dense" if dense is None else bool(dense)
    if use_dense and cfg.seg_length != 1:
        raise ValueError("data.seg_length applies to segment sampling only; use seg_length 1 with dense sampling")
    sampler = FrameSampler(num_segments=cfg.num_segments, seg_length=cfg.seg_length, dense=use_dense,
                           sampling_rate=cfg.sampling_rate, random_shift=cfg.random_shift)

    input_size = cfg.input_size
    scale = resolve_scale_size(cfg.scale_size, input_size, cfg.dataset)
    num_clips = 1
    if split == "train":
        rand_augment = None
        if cfg.rand_aug:
            translate = int(0.45 * (scale if isinstance(scale, int) else min(scale)))
            rand_augment = ClipRandAugment(cfg.rand_aug_policy, translate, cfg.mean)
        transform: TrainAugmentation | EvalViews = TrainAugmentation(
            input_size, scale, crop=cfg.train_crop, crop_area=cfg.crop_area, crop_ratio=cfg.crop_ratio,
            flip=cfg.flip, grayscale=cfg.grayscale, rand_augment=rand_augment)
    elif split == "val":
        transform = EvalViews(input_size, scale, num_crops=1)
    else:
        transform = EvalViews(input_size, scale, num_crops=test_crops or cfg.test_crops)
        num_clips = test_clips or cfg.test_clips

    return VideoDataset(records, root, split=split, sampler=sampler, transform=transform, class_names=class_names,
                        image_tmpl=cfg.image_tmpl, video_backend=cfg.video_backend, num_sample=cfg.num_sample,
                        num_clips=num_clips, flip_pairs=cfg.flip_pairs, max_retries=cfg.max_retries, seed=seed)
