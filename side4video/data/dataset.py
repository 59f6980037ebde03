"""VideoDataset: annotated videos -> sampled, augmented uint8 clips; and ``create_dataset`` from ``cfg.data``.

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
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError, InputNotFoundError
from ..registry import Registry
from .bad_samples import TooManyUnreadableInputs
from .decoders import VIDEO_BACKENDS, ClipReader, VideoReadError, open_reader
from .device_augment import resolve_augment_on
from .lists import VideoRecord, read_annotation_list, read_label_names
from .sampling import FrameSampler, resolve_protocol
from .transforms import (
    ClipAugmentParams,
    ClipRandAugment,
    EvalViews,
    TrainAugmentation,
    distinct_view_count,
    resize_clip,
    resolve_flip_pairs,
    resolve_grayscale,
    resolve_scale_size,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

# data.format -> the stream class of that format (an IterableDataset built on ClipMaker), registered by its own module
# (side4video.data.shards registers "webdataset"; the package's __init__ imports it): the stream builds on this
# module, so this module cannot import it. "files" (the annotation list and a file tree) is VideoDataset, not listed.
DATA_FORMATS: Registry = Registry("data format")


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


class ClipMaker:
    """What turns one annotated video into a sample: frame sampling, decoding, augmentation, labels; shared by the
    file-tree dataset (:class:`VideoDataset`) and the shard stream (``side4video.data.shards``), so that both give
    the same clips for the same video, index and epoch.

    A subclass says where a record's frames come from (:meth:`_open`); :meth:`train_clip` and :meth:`eval_clip` also
    take the opener as an argument (the stream opens in-memory samples).
    """

    def __init__(self, *, split: str, sampler: FrameSampler, transform: TrainAugmentation | EvalViews,
                 class_names: Sequence[str], image_tmpl: str = "img_{:05d}.jpg", video_backend: str = "decord",
                 num_sample: int = 1, num_clips: int = 1, flip_pairs: Sequence[Sequence[int]] = (),
                 max_retries: int = 10, seed: int = 0, augment_on: str = "workers"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if (split == "train") != isinstance(transform, TrainAugmentation):
            raise TypeError("the train split takes a TrainAugmentation, val/test take EvalViews")
        if video_backend not in VIDEO_BACKENDS:
            raise ValueError(f"data.video_backend must be one of {VIDEO_BACKENDS}, got {video_backend!r}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if augment_on not in ("workers", "device"):
            raise ValueError(f"augment_on must be workers or device (resolve auto first), got {augment_on!r}")
        self.split = split
        # device: training samples are decoded clips with their views' parameters, augmented by the training step
        self.augment_on = augment_on if split == "train" else "workers"
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

    def _open(self, record: VideoRecord) -> ClipReader:
        """The reader of one record's frames."""
        raise NotImplementedError

    def _rng(self, index: int, retry: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, retry])

    def _labels(self, label: int, flipped: Sequence[bool]) -> torch.Tensor:
        return torch.tensor([self.flip_label.get(label, label) if f else label for f in flipped], dtype=torch.int64)

    def _draw_views(self, height: int, width: int, rng: np.random.Generator) -> list[ClipAugmentParams]:
        """The ``num_sample`` views' parameters for the device (RandAugment operations recorded)."""
        return [self.transform.draw(height, width, rng, record_ops=True) for _ in range(self.num_sample)]

    def train_clip(self, index: int, record: VideoRecord,
                   replacement: Callable[[np.random.Generator], VideoRecord | None],
                   open_clip: Callable[[VideoRecord], ClipReader] | None = None) -> dict[str, Any]:
        """The training sample ``index`` (whose draws come from ``(seed, epoch, index, retry)``) from ``record``;
        when it is unreadable, ``replacement(rng)`` names another video (drawn from the retry's generator; None:
        there is none) until ``data.max_retries`` replacements have failed."""
        open_clip = open_clip or self._open
        errors: list[tuple[str, str]] = []
        current: VideoRecord | None = record
        for retry in range(self.max_retries + 1):
            rng = self._rng(index, retry)
            if retry > 0:
                current = replacement(rng)
                if current is None:
                    break
            try:
                with open_clip(current) as reader:
                    indices = self.sampler.train(reader.num_frames, rng)
                    # device placement with a decoder that scales: the views are drawn first (the same draws, in
                    # the same order, as after decoding), from the header's shape, so that it decodes at their size
                    draw_first = self.augment_on == "device" and getattr(reader, "scales_at_decode", False)
                    if draw_first:
                        views = self._draw_views(*reader.frame_shape, rng)
                        frames = reader.read(indices, min_size=views[0].scaled)
                    else:
                        frames = reader.read(indices)
            except VideoReadError as error:
                errors.append((error.path, error.reason))
                _bad_input_log.warn(error.path, error.reason, "replaced by another training video")
                continue
            if self.augment_on == "device":
                if not draw_first:
                    views = self._draw_views(*frames.shape[-2:], rng)
                    scaled = views[0].scaled
                    if frames.shape[-2] >= 2 * scaled[0] and frames.shape[-1] >= 2 * scaled[1]:
                        # a decoder that cannot scale (decord, torchcodec) and frames over twice the needed size
                        # (e.g. 1080p): resized here, so that the worker does not ship 6 MB frames to the step
                        frames = resize_clip(frames, scaled)
                return dict(frames=frames, augment=views, label=self._labels(current.label, [v.flipped for v in views]),
                            index=index, video_id=current.path, valid=True, errors=errors)
            views, flipped = zip(*(self.transform(frames, rng) for _ in range(self.num_sample)))
            return dict(frames=torch.stack(views), label=self._labels(current.label, flipped), index=index,
                        video_id=current.path, valid=True, errors=errors)
        listing = "; ".join(f"{path}: {reason}" for path, reason in errors)
        raise TooManyUnreadableInputs(
            f"training sample {index} (list line {record.line}, {record.path}): the video and {self.max_retries} "
            f"replacements are all unreadable (data.max_retries={self.max_retries}): {listing}")

    def eval_clip(self, index: int, record: VideoRecord,
                  open_clip: Callable[[VideoRecord], ClipReader] | None = None) -> dict[str, Any]:
        """The evaluation sample ``index`` from ``record``: deterministic views, or ``valid=False`` and zero frames
        when the video is unreadable."""
        open_clip = open_clip or self._open
        size = self.transform.input_size
        try:
            with open_clip(record) as reader:
                if self.split == "val":  # the validation rule (the same indices as one test clip)
                    indices = self.sampler.validation(reader.num_frames)[None]  # [1, n]
                else:
                    indices = self.sampler.test(reader.num_frames, self.num_clips)  # [K, n]
                frames = reader.read(indices.reshape(-1))
        except VideoReadError as error:
            _bad_input_log.warn(error.path, error.reason, "evaluated as invalid")
            frames = torch.zeros(self.num_views, self.sampler.frames_per_clip, 3, size, size, dtype=torch.uint8)
            return dict(frames=frames, label=torch.full((self.num_views,), record.label, dtype=torch.int64),
                        index=index, video_id=record.path, valid=False, errors=[(error.path, error.reason)],
                        flipped=torch.zeros(self.num_views, dtype=torch.bool), distinct_views=None,
                        out_of_order=False)
        # what the views really are: coinciding crops or clips (short or small videos) and frames out of order
        # (the reference's dense window wraps around a video shorter than it)
        distinct = distinct_view_count(indices, self.transform.geometry(*frames.shape[-2:]))
        out_of_order = bool((np.diff(indices, axis=1) < 0).any())
        # crop all clips at once, then reorder [crop, clip, frame] -> [clip * crop, frame]
        views, flipped = self.transform(frames)  # [C, K * n, 3, S, S]
        views = views.unflatten(1, indices.shape).transpose(0, 1)  # [K, C, n, 3, S, S]
        views = views.reshape(self.num_views, indices.shape[1], 3, size, size)
        view_flipped = list(flipped) * self.num_clips          # view = clip * crops + crop
        return dict(frames=views, label=self._labels(record.label, view_flipped), index=index,
                    video_id=record.path, valid=True, errors=[], flipped=torch.tensor(view_flipped),
                    distinct_views=distinct, out_of_order=out_of_order)

    def flip_permutation(self) -> torch.Tensor | None:
        """Class permutation that maps scores of a flipped view back (left/right pairs swapped); None without pairs."""
        if not self.flip_label:
            return None
        permutation = torch.arange(len(self.class_names))
        for source, target in self.flip_label.items():
            permutation[source] = target
        return permutation


class VideoDataset(ClipMaker, Dataset):
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
                 seed: int = 0, augment_on: str = "workers"):
        super().__init__(split=split, sampler=sampler, transform=transform, class_names=class_names,
                         image_tmpl=image_tmpl, video_backend=video_backend, num_sample=num_sample,
                         num_clips=num_clips, flip_pairs=flip_pairs, max_retries=max_retries, seed=seed,
                         augment_on=augment_on)
        if not records:
            raise ValueError("VideoDataset needs at least one record")
        self.records = list(records)
        self.root = root

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._train_item(index) if self.training else self._eval_item(index)

    def _open(self, record: VideoRecord) -> ClipReader:
        return open_reader(record, self.root, image_tmpl=self.image_tmpl, video_backend=self.video_backend)

    def _train_item(self, index: int) -> dict[str, Any]:
        tried = [index]

        def replacement(rng: np.random.Generator) -> VideoRecord:
            tried.append(self._replacement(rng, tried))
            return self.records[tried[-1]]

        return self.train_clip(index, self.records[index], replacement)

    def _replacement(self, rng: np.random.Generator, tried: Sequence[int]) -> int:
        """A different video, drawn from the sample's own generator; avoids videos already tried."""
        candidate = int(rng.integers(len(self.records)))
        for _ in range(16):
            if candidate not in tried or len(tried) >= len(self.records):
                break
            candidate = int(rng.integers(len(self.records)))
        return candidate

    def _eval_item(self, index: int) -> dict[str, Any]:
        return self.eval_clip(index, self.records[index])


def _flip_label_map(flip_pairs: Sequence[Sequence[int]], num_classes: int) -> dict[int, int]:
    mapping: dict[int, int] = {}
    for pair in flip_pairs or ():
        if len(pair) != 2:
            raise ValueError(f"flip pairs must be [a, b] pairs, got {list(pair)!r}")
        a, b = int(pair[0]), int(pair[1])
        for label in (a, b):
            if not 0 <= label < num_classes:
                raise DataError(f"data.flip_pairs: label {label} is outside [0, {num_classes}) "
                                f"(data.num_classes={num_classes})")
            if label in mapping or (a == b):
                raise DataError(f"data.flip_pairs: label {label} is listed twice")
        mapping[a], mapping[b] = b, a
    return mapping


# A few keys of the validated data section (side4video.config fills every key); a mapping that lacks them was not
# validated (a hand-made dict): the dataset reads many more keys and would fail later with a less helpful error.
SECTION_KEYS = ("dataset", "num_segments", "seg_length", "sampling", "sampling_protocol", "dense_range",
                "sampling_rate", "random_shift", "input_size", "test_crops", "three_crop", "video_backend")


def _check_section(data_cfg: Any) -> None:
    """``data_cfg`` must be a validated ``data`` section (every key present, values converted)."""
    if not isinstance(data_cfg, Mapping):
        raise TypeError(f"create_dataset needs the validated data section (cfg.data), got {type(data_cfg).__name__}")
    missing = [key for key in SECTION_KEYS if key not in data_cfg]
    if missing:
        raise TypeError(f"create_dataset needs a validated data section (load_config(...).data or "
                        f"side4video.config.config_section('data', {{...}})); missing keys: {', '.join(missing)}")


def create_sampler(data_cfg: Any, *, dense: bool | None = None) -> FrameSampler:
    """The FrameSampler of a validated data section (``sampling_protocol`` resolved for ``dataset``);
    ``dense`` overrides ``data.sampling``."""
    use_dense = data_cfg.sampling == "dense" if dense is None else bool(dense)
    if use_dense and data_cfg.seg_length != 1:
        raise ConfigError(f"dense sampling takes one frame per segment, but data.seg_length is "
                          f"{data_cfg.seg_length}; use data.seg_length: 1 with dense sampling")
    protocol = resolve_protocol(data_cfg.sampling_protocol, data_cfg.dataset)
    if use_dense and protocol != "tsn" and data_cfg.dense_range < data_cfg.num_segments:
        raise ConfigError(f"data.dense_range ({data_cfg.dense_range}) is smaller than data.num_segments "
                          f"({data_cfg.num_segments}): the dense stride dense_range // num_segments would be 0")
    return FrameSampler(num_segments=data_cfg.num_segments, seg_length=data_cfg.seg_length, dense=use_dense,
                        sampling_rate=data_cfg.sampling_rate, random_shift=data_cfg.random_shift,
                        protocol=protocol, dense_range=data_cfg.dense_range, dense_window=data_cfg.dense_window)


def create_dataset(data_cfg: Any, split: str, *, test_crops: int | None = None, test_clips: int | None = None,
                  dense: bool | None = None, seed: int = 0, records: Sequence[VideoRecord] | None = None,
                  root: str | None = None, sampler=None, device_type: str | None = None) -> VideoDataset | Any:
    """The dataset of ``split`` ('train', 'val' or 'test') described by the validated section ``cfg.data``.

    ``data_cfg`` is ``load_config(...).data`` or ``side4video.config.config_section('data', {...})``: every key
    present and already checked, so nothing is defaulted or re-validated here. 'val' is one centre crop of the
    validation clip; 'test' has ``test_crops x test_clips`` views. ``test_crops``/``test_clips``/``dense``
    override the config (``dense=True`` means ``sampling: dense``). ``records`` and ``root`` replace the split's
    annotation list and root (tools pass the videos they found; nothing is written or edited); ``sampler``
    replaces the config's frame sampler (a clip assembler's, e.g. whole videos for full-video clustering).
    Automatic keys: ``sampling_protocol: auto``,
    ``scale_size``, ``grayscale`` and ``flip_pairs`` left at None follow the reference's rule for the dataset;
    ``augment_on: auto`` places training augmentation on the device for ``device_type`` 'cuda' (None: whether
    CUDA is available), in the workers otherwise.

    ``data.format`` other than ``files`` (``webdataset``): the split's list is a shard URL pattern and the result
    is that format's stream (an ``IterableDataset`` from ``DATA_FORMATS``, e.g. ``side4video.data.shards``) with
    the same sampling, decoding and augmentation; ``records`` always means files.

    Raises InputNotFoundError for a missing list, root or label file; DataError, naming the file and line,
    for malformed lists, labels outside the classes, a label file that disagrees with ``data.num_classes`` or
    unusable flip pairs; ConfigError for an unset list or a dense override that the config cannot express.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_section(data_cfg)
    cfg = data_cfg

    prefix = "train" if split == "train" else "val"
    list_file = cfg[f"{prefix}_list"]
    root = cfg[f"{prefix}_root"] if root is None else root
    # a section built before data.format existed (a hand-made mapping) reads files, as it always did
    stream = records is None and cfg.get("format", "files") != "files"
    if not list_file and records is None:
        raise ConfigError(f"data.{prefix}_list is not set (needed for the {split} split)")
    if root and not stream and not os.path.isdir(root):
        raise InputNotFoundError(f"data.{prefix}_root directory not found: {root}")

    num_classes = cfg.num_classes
    if cfg.label_list:
        class_names = read_label_names(cfg.label_list)
        if len(class_names) != num_classes:
            raise DataError(f"{cfg.label_list}: data.label_list names {len(class_names)} classes "
                            f"but data.num_classes is {num_classes}")
    else:
        class_names = [str(i) for i in range(num_classes)]
    if records is None and not stream:
        records = read_annotation_list(list_file, num_classes=num_classes)

    flip_pairs = resolve_flip_pairs(cfg.flip_pairs, cfg.dataset)
    if cfg.flip_pairs is None and flip_pairs and max(max(pair) for pair in flip_pairs) >= num_classes:
        raise DataError(f"data.flip_pairs defaults to the reference's Something-Something pairs {flip_pairs} for "
                        f"data.dataset '{cfg.dataset}', but data.num_classes is {num_classes}; set "
                        f"data.flip_pairs explicitly ([] for none)")
    if sampler is None:
        sampler = create_sampler(cfg, dense=dense)

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
            flip=cfg.flip, grayscale=resolve_grayscale(cfg.grayscale, cfg.dataset), rand_augment=rand_augment)
    elif split == "val":
        transform = EvalViews(input_size, scale, num_crops=1)
    else:
        transform = EvalViews(input_size, scale, num_crops=test_crops or cfg.test_crops, three_crop=cfg.three_crop)
        num_clips = test_clips or cfg.test_clips
        most = getattr(sampler, "max_test_clips", None)
        if most is not None and num_clips > most:
            raise ConfigError(f"{type(sampler).__name__} (network.assembler) sees every frame of a video, so it tests "
                              f"{most} temporal clip per video, got test_clips {num_clips}: use --test_clips {most} "
                              "(crops still apply)")

    augment_on = "workers"
    if split == "train":
        augment_on = resolve_augment_on(cfg.get("augment_on", "workers"), device_type)
        if augment_on == "device" and not isinstance(sampler, FrameSampler):
            if cfg.get("augment_on") == "device":
                raise ConfigError(f"data.augment_on: device batches clips of one length; {type(sampler).__name__} "
                                  "(network.assembler) gives whole videos of different lengths: use augment_on: "
                                  "workers")
            augment_on = "workers"
    clips = dict(split=split, sampler=sampler, transform=transform, class_names=class_names,
                 image_tmpl=cfg.image_tmpl, video_backend=cfg.video_backend, num_sample=cfg.num_sample,
                 num_clips=num_clips, flip_pairs=flip_pairs, max_retries=cfg.max_retries, seed=seed,
                 augment_on=augment_on)
    if stream:
        return DATA_FORMATS.get(cfg.format)(list_file, batch_size=int(cfg.batch_size),
                                            shuffle_buffer=int(cfg.shard_shuffle), **clips)
    return VideoDataset(records, root, **clips)
