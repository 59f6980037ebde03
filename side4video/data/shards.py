"""WebDataset tar shards as a source of clips (``data.format: webdataset``).

The shards are written by ``side4video prep shards`` (:mod:`side4video.prep.shards`): one sample per readable video
of an annotation list, as the tar members ``KEY.json`` (video id, list index and line, label), ``KEY.cls`` (label),
optionally ``KEY.txt`` (a caption), and either ``KEY.<ext>`` (the video file as it was, e.g. ``KEY.mp4``) or
``KEY.frame00001.jpg``, ``KEY.frame00002.jpg`` ... (a frame folder's image files); an ``index.json`` beside the
shards (the manifest) gives each shard's sample count. ``data.train_list``/``data.val_list`` name the shards: paths
or URLs (``http(s)://``, ``gs://``, ... as WebDataset's ``gopen`` opens them), brace-expanded
(``/data/shards/shard-{000000..000009}.tar``; several patterns joined by ``::``).

:class:`ShardDataset` is an ``IterableDataset`` that decodes every sample through the package's readers and the same
:class:`~side4video.data.dataset.ClipMaker` as the file path: a clip's frame indices and augmentation come from
``(seed, epoch, index, retry)`` with ``index`` the video's position in the annotation list the shards came from, so
a video gives the same clip from shards as from files, whichever process, worker or buffer slot serves it.

Training epoch: N = the samples of the named shards (from the manifest).

* The shard order is a permutation drawn from ``(seed, epoch)``; the shards' samples in that order are positions
  0..N-1. Rank r of W takes positions ``[r n, (r + 1) n)`` with ``n = N // W``: the last ``N mod W`` positions of the
  epoch's order (at most W - 1 samples, from the epoch's last shard, different ones each epoch) are dropped.
* The rank's n samples make ``n // B`` whole batches (the ``n mod B`` left over are dropped, as the file loader
  drops its incomplete last batch); each DataLoader worker gets a contiguous run of those batches, streams its run's
  samples through a shuffle buffer of ``data.shard_shuffle`` samples (generator ``(seed, epoch, run start)``) and
  decodes them. Every rank therefore yields ``N // W // B`` batches, the trainer's batches per epoch, and no sample
  is served twice in an epoch (nothing is repeated).
* ``set_start(k)`` (a mid-epoch resume) skips the first k samples of the rank's loader order; workers' batches
  arrive round robin (as the DataLoader collects them), so each worker knows how many of its own to skip; skipped
  samples are read but not decoded.

Evaluation (val/test): the shards in the order named; rank r takes the r-th of W contiguous, near-equal parts and
each worker a contiguous run of whole batches: every sample exactly once, in order. Samples carry their list index,
so scores gathered over processes sort as the file path's.

Unreadable samples behave as in the file path: in training the failure is recorded in ``errors`` and the sample is
replaced by another one from the worker's shuffle buffer (or one of the last few it served), chosen by the retry's
generator; in evaluation it comes back with ``valid=False``. A shard that cannot be opened, is damaged, or holds
fewer samples than its manifest says stops the run with one ``DataError`` line naming it (rewrite it: ``side4video
prep shards`` redoes missing shards).

Videos are decoded by the package's readers, which open files: a sample's video is written to a temporary file
(``/dev/shm`` where there is one) for the time it is read. ``webdataset`` is imported only here and only when shards
are used (the ``shards`` extra).
"""
from __future__ import annotations

import collections
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ConfigError, DataError, InputNotFoundError
from .dataset import DATA_FORMATS, ClipMaker
from .decoders import ClipReader, EncodedFramesReader, VideoReadError, open_reader
from .lists import VideoRecord

MANIFEST_NAME = "index.json"
MANIFEST_FORMAT = "side4video-shards"
MANIFEST_VERSION = 1
FRAME_PREFIX = "frame"
EXTRA_HINT = "pip install 'side4video[shards]' (or pip install webdataset)"
# served samples a worker keeps as replacements for an unreadable one, besides its shuffle buffer (which is empty
# with data.shard_shuffle: 0 and drains at the end of a run)
RECENT_REPLACEMENTS = 16


def require_webdataset(what: str = "data.format: webdataset") -> Any:
    """The ``webdataset`` module, or one ConfigError line naming the extra that installs it."""
    try:
        import webdataset  # deferred: an optional extra (side4video[shards]), needed only where shards are used
    except ModuleNotFoundError as error:
        missing = error.name or "webdataset"
        raise ConfigError(f"{what} needs the webdataset package ({missing} is not installed): {EXTRA_HINT}") from None
    return webdataset


# -- naming the shards -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """One named shard: where it is, its file name and its sample count (from the manifest)."""

    url: str
    name: str
    samples: int


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _split_url(url: str, what: str) -> tuple[str, str]:
    """``(folder, file name)`` of a shard path or URL."""
    if url.startswith("pipe:"):
        raise ConfigError(f"{what}: name shards by path or URL, not by a 'pipe:' command ({url}): the manifest "
                          f"{MANIFEST_NAME} is looked up beside them")
    folder, _, name = url.rpartition("/")
    return folder, name


def expand_urls(spec: str, what: str = "data.train_list") -> list[str]:
    """The shard paths or URLs of a brace pattern (``shard-{000000..000009}.tar``; ``::`` joins patterns)."""
    urls = [url for url in require_webdataset().shardlists.expand_urls(str(spec).strip()) if url]
    if not urls:
        raise ConfigError(f"{what} names no shards: {spec!r}")
    return urls


def _read_manifest(folder: str, what: str) -> dict[str, Any]:
    url = f"{folder}/{MANIFEST_NAME}" if folder else MANIFEST_NAME
    try:
        if _is_local(url):
            with open(_local_path(url), "rb") as handle:
                data = handle.read()
        else:
            with require_webdataset().gopen(url, "rb") as handle:
                data = handle.read()
    except FileNotFoundError:
        raise InputNotFoundError(f"{what}: shard manifest not found: {url} (shards are written with their manifest "
                                 "by 'side4video prep shards')") from None
    except OSError as error:
        raise DataError(f"{what}: cannot read the shard manifest {url}: {error}") from None
    try:
        manifest = json.loads(data)
    except ValueError as error:
        raise DataError(f"{what}: {url} is not JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{what}: {url} is not a side4video shard manifest")
    if not manifest.get("complete"):
        raise DataError(f"{what}: the shards in {folder or '.'} are incomplete ({MANIFEST_NAME} says so): run the "
                        "same 'side4video prep shards' command again to finish them")
    return manifest


def resolve_shards(spec: str, what: str = "data.train_list") -> list[Shard]:
    """The shards of a pattern with their sample counts from the manifest beside them; a missing local shard, a
    missing manifest or a shard the manifest does not list is one error line."""
    manifests: dict[str, dict[str, int]] = {}
    shards = []
    for url in expand_urls(spec, what):
        folder, name = _split_url(url, what)
        if _is_local(url) and not os.path.isfile(_local_path(url)):
            raise InputNotFoundError(f"{what}: shard not found: {url}")
        if folder not in manifests:
            entries = _read_manifest(folder, what)["shards"]
            manifests[folder] = {entry["name"]: int(entry["samples"]) for entry in entries}
        if name not in manifests[folder]:
            raise DataError(f"{what}: {url} is not listed in {folder or '.'}/{MANIFEST_NAME}")
        shards.append(Shard(url=url, name=name, samples=manifests[folder][name]))
    return shards


# -- reading samples -------------------------------------------------------------------------------------------------
@dataclass
class RawSample:
    """One sample as stored: its record (the listed video id, label, list line), list index and encoded data."""

    record: VideoRecord
    index: int
    where: str                               # how errors name it: "video_id (in shard-000003.tar)"
    video: bytes | None = None
    suffix: str = ""                         # the video file's extension, without the dot
    frames: list[bytes] = field(default_factory=list)
    frame_names: list[str] = field(default_factory=list)
    caption: str | None = None


def parse_sample(key: str, members: dict[str, bytes], shard: Shard) -> RawSample:
    """A sample from its tar members (suffix -> bytes); DataError when its ``json`` member is unusable."""
    try:
        meta = json.loads(members["json"])
        video_id, index, label = str(meta["video_id"]), int(meta["index"]), int(meta["label"])
    except (KeyError, ValueError, TypeError) as error:
        raise DataError(f"shard {shard.url}: sample {key} has no usable json member ({error!r}); was it written "
                        "by 'side4video prep shards'?") from None
    frames = sorted(suffix for suffix in members if suffix.startswith(FRAME_PREFIX))
    videos = [suffix for suffix in members if suffix not in ("json", "cls", "txt") and suffix not in frames]
    where = f"{video_id} (in {shard.name})"
    record = VideoRecord(path=video_id, num_frames=len(frames) if frames else meta.get("num_frames"), label=label,
                         is_video=not frames, line=int(meta.get("line", 0)))
    caption = members["txt"].decode("utf-8") if "txt" in members else None
    if frames:
        return RawSample(record, index, where, frames=[members[name] for name in frames],
                         frame_names=[name[len(FRAME_PREFIX):] for name in frames], caption=caption)
    if len(videos) != 1:
        raise DataError(f"shard {shard.url}: sample {key} holds {len(videos)} video members ({videos}); expected one")
    return RawSample(record, index, where, video=members[videos[0]], suffix=videos[0], caption=caption)


def read_shard(shard: Shard, skip: int = 0, take: int | None = None) -> Iterator[RawSample]:
    """The samples of one shard, from its ``skip``-th on, ``take`` of them (None: to the end; fewer than asked for
    is a DataError: the shard does not hold what its manifest says)."""
    take = shard.samples - skip if take is None else take
    if take <= 0:
        return
    gopen = require_webdataset().gopen
    try:
        stream = gopen(shard.url, "rb")
    except FileNotFoundError:
        raise InputNotFoundError(f"shard not found: {shard.url}") from None
    except OSError as error:
        raise DataError(f"cannot open shard {shard.url}: {error}") from None
    served, position = 0, 0
    try:
        key, members = None, {}
        for name, data in _tar_members(stream):
            sample_key, _, suffix = name.rpartition("/")[2].partition(".")
            if key is not None and sample_key != key:
                if position >= skip:
                    yield parse_sample(key, members, shard)
                    served += 1
                    if served == take:
                        return
                position, members = position + 1, {}
            key = sample_key
            members[suffix.lower()] = data
        if key is not None and position >= skip:
            yield parse_sample(key, members, shard)
            served += 1
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"shard {shard.url} is damaged after {skip + served} samples ({error}); write it again "
                        "(delete it and rerun 'side4video prep shards')") from None
    finally:
        stream.close()
    if served < take:
        raise DataError(f"shard {shard.url} holds {skip + served} samples, its manifest says {shard.samples}; write "
                        "it again (delete it and rerun 'side4video prep shards')")


def _tar_members(stream) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of a tar stream's regular files, in order (read sequentially: works on pipes and URLs)."""
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for info in archive:
            if info.isreg():
                handle = archive.extractfile(info)
                yield info.name, handle.read() if handle is not None else b""


def _spool_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


class SpooledVideoReader:
    """A sample's video written to a temporary file and opened by the package's reader of ``video_backend`` (which
    opens paths), so that it decodes exactly as the same file in a file tree; errors name the sample."""

    def __init__(self, sample: RawSample, video_backend: str):
        self.path = sample.where
        self._video_id = sample.record.path
        handle, self._file = tempfile.mkstemp(suffix=f".{sample.suffix}", prefix="side4video-", dir=_spool_dir())
        with os.fdopen(handle, "wb") as out:
            out.write(sample.video or b"")
        record = VideoRecord(path=os.path.basename(self._file), num_frames=None, label=0, is_video=True)
        try:
            self._reader = open_reader(record, os.path.dirname(self._file), image_tmpl="", video_backend=video_backend)
        except VideoReadError as error:
            self._remove()
            raise self._renamed(error) from None
        except BaseException:
            self._remove()
            raise
        self.num_frames = self._reader.num_frames

    @property
    def scales_at_decode(self) -> bool:
        return self._reader.scales_at_decode

    @property
    def frame_shape(self) -> tuple[int, int]:
        try:
            return self._reader.frame_shape
        except VideoReadError as error:
            raise self._renamed(error) from None

    def read(self, indices: Sequence[int] | np.ndarray, min_size: tuple[int, int] | None = None) -> torch.Tensor:
        try:
            return self._reader.read(indices, min_size)
        except VideoReadError as error:
            raise self._renamed(error) from None

    def _renamed(self, error: VideoReadError) -> VideoReadError:
        """The reader's error about the temporary file, about the sample (decoders quote the path they opened)."""
        return VideoReadError(self.path, error.reason.replace(self._file, self._video_id))

    def _remove(self) -> None:
        if os.path.exists(self._file):
            os.unlink(self._file)

    def close(self) -> None:
        self._reader.close()
        self._remove()

    def __enter__(self) -> "SpooledVideoReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_sample(sample: RawSample, video_backend: str) -> ClipReader:
    """The reader of a stored sample: its frame images decoded in memory, or its video through a temporary file."""
    if sample.video is None:
        return EncodedFramesReader(sample.where, sample.frames, sample.frame_names)
    return SpooledVideoReader(sample, video_backend)


# -- splitting an epoch ----------------------------------------------------------------------------------------------
def rank_span(total: int, rank: int, world_size: int, *, training: bool) -> tuple[int, int]:
    """The positions ``[start, stop)`` of rank ``rank``: equal parts of ``total // world_size`` in training (the
    remainder dropped), W contiguous near-equal parts covering everything in evaluation."""
    if training:
        size = total // world_size
        return rank * size, (rank + 1) * size
    return total * rank // world_size, total * (rank + 1) // world_size


def worker_runs(num_samples: int, batch_size: int, num_workers: int, *, drop_last: bool) -> list[tuple[int, int]]:
    """Each worker's contiguous run ``[start, stop)`` of a rank's samples, in whole batches (``drop_last``: the
    incomplete last batch is dropped; otherwise it is the last worker's last)."""
    batches = num_samples // batch_size if drop_last else -(-num_samples // batch_size)
    base, extra = divmod(batches, num_workers)
    runs, first = [], 0
    for worker in range(num_workers):
        count = base + (worker < extra)
        runs.append((min(first * batch_size, num_samples), min((first + count) * batch_size, num_samples)))
        first += count
    if drop_last:
        runs = [(start, min(stop, batches * batch_size)) for start, stop in runs]
    return runs


def round_robin_skips(batch_counts: Sequence[int], skip_batches: int) -> list[int]:
    """How many of its own batches each worker skips so that the loader's first ``skip_batches`` are skipped: the
    DataLoader takes batches from workers in turn (0, 1, ..., K-1, 0, ...), passing over the finished ones."""
    skips = [0] * len(batch_counts)
    remaining = skip_batches
    for turn in range(max(batch_counts, default=0)):
        for worker, count in enumerate(batch_counts):
            if remaining == 0:
                return skips
            if turn < count:
                skips[worker] += 1
                remaining -= 1
    return skips


def shuffled(samples: Iterator[RawSample], size: int,
             rng: np.random.Generator) -> Iterator[tuple[RawSample, list[RawSample]]]:
    """``(sample, buffer)`` in the order of a shuffle buffer of ``size`` samples (0: as they come); ``buffer`` is the
    live buffer (the samples still waiting), which the caller may draw replacements from."""
    buffer: list[RawSample] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        if size == 0:
            yield sample, buffer
            continue
        slot = int(rng.integers(len(buffer)))
        sample, buffer[slot] = buffer[slot], sample
        yield sample, buffer
    while buffer:
        yield buffer.pop(int(rng.integers(len(buffer)))), buffer


class ShardDataset(ClipMaker, IterableDataset):
    """Clips streamed from WebDataset shards (see the module docstring for the epoch, the split and the order).

    ``len(ds)`` is the epoch's samples over all processes (the named shards' total), as ``len`` of a VideoDataset, so
    that the trainer's batches per epoch, ``len(ds) // (batch_size x processes)``, is what every rank yields.
    Items are the VideoDataset's. ``rank``/``world_size`` default to the initialised process group's.
    """

    def __init__(self, urls: str, *, batch_size: int, shuffle_buffer: int = 256, rank: int | None = None,
                 world_size: int | None = None, **clip_options: Any):
        super().__init__(**clip_options)
        what = "data.train_list" if self.training else "data.val_list"
        if batch_size < 1 or shuffle_buffer < 0:
            raise ValueError(f"batch_size must be positive and shuffle_buffer non-negative, got {batch_size}, "
                             f"{shuffle_buffer}")
        self.urls = str(urls)
        self.shards = resolve_shards(self.urls, what)
        self.num_samples = sum(shard.samples for shard in self.shards)
        if self.num_samples == 0:
            raise DataError(f"{what}: the shards {self.urls} hold no samples")
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        if rank is None or world_size is None:
            initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank, world_size = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if initialised \
                else (0, 1)
        self.set_distributed(rank, world_size)
        # shared memory, as the epoch: workers forked earlier (persistent_workers) see a resume's start
        self._start = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return self.num_samples

    def set_distributed(self, rank: int, world_size: int) -> None:
        """Serve rank ``rank`` of ``world_size`` processes (set before the loader's workers start)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        self.rank, self.world_size = int(rank), int(world_size)

    def set_batch_size(self, batch_size: int) -> None:
        """The loader's batch size: workers are given whole batches (create_loader sets it)."""
        self.batch_size = int(batch_size)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._start.fill_(0)

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank's order in this epoch (a mid-epoch resume; training only);
        lasts until the next ``set_epoch``."""
        if start < 0:
            raise ValueError(f"start must be non-negative, got {start}")
        self._start.fill_(start)

    def shard_order(self, epoch: int) -> list[Shard]:
        """The epoch's shard order: drawn from ``(seed, epoch)`` in training, as named in evaluation."""
        if not self.training:
            return list(self.shards)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order]

    def batches_per_rank(self) -> int:
        """Batches each rank yields in a training epoch (every rank the same)."""
        return self.num_samples // self.world_size // self.batch_size

    def plan(self, worker: int, num_workers: int) -> tuple[int, int, int]:
        """``(start, stop, skip)``: the positions of the epoch's order that worker ``worker`` of ``num_workers`` of
        this rank reads, and how many of its samples it skips (a resume's start)."""
        span_start, span_stop = rank_span(self.num_samples, self.rank, self.world_size, training=self.training)
        runs = worker_runs(span_stop - span_start, self.batch_size, num_workers, drop_last=self.training)
        skip = 0
        if self.training:
            counts = [-(-(stop - start) // self.batch_size) for start, stop in runs]
            skip = round_robin_skips(counts, int(self._start.item()) // self.batch_size)[worker] * self.batch_size
        start, stop = runs[worker]
        return span_start + start, span_start + stop, skip

    def raw_samples(self, start: int, stop: int, epoch: int) -> Iterator[RawSample]:
        """The stored samples at positions ``[start, stop)`` of the epoch's order (only the shards they lie in are
        opened)."""
        offset = 0
        for shard in self.shard_order(epoch):
            low, high = max(start, offset), min(stop, offset + shard.samples)
            if low < high:
                yield from read_shard(shard, skip=low - offset, take=high - low)
            offset += shard.samples
            if offset >= stop:
                return

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        start, stop, skip = self.plan(worker, num_workers)
        samples = self.raw_samples(start, stop, epoch)
        if not self.training:
            for sample in samples:
                yield self.eval_clip(sample.index, sample.record, lambda _record, s=sample: self._open_sample(s))
            return
        rng = np.random.default_rng([self.seed, epoch, start])
        recent: collections.deque[RawSample] = collections.deque(maxlen=RECENT_REPLACEMENTS)
        for served, (sample, buffer) in enumerate(shuffled(samples, self.shuffle_buffer, rng)):
            if served >= skip:
                yield self._train_sample(sample, [*buffer, *recent])
            recent.append(sample)

    def _open_sample(self, sample: RawSample) -> ClipReader:
        return open_sample(sample, self.video_backend)

    def _train_sample(self, sample: RawSample, pool: list[RawSample]) -> dict[str, Any]:
        """The training item of ``sample``; an unreadable one is replaced from ``pool`` (the worker's buffer and its
        last served samples), chosen by the retry's generator."""
        stored = {sample.record: sample}
        tried = [sample.record]

        def replacement(rng: np.random.Generator) -> VideoRecord | None:
            candidates = [other for other in pool if other.record not in tried]
            if not candidates:
                return None
            chosen = candidates[int(rng.integers(len(candidates)))]
            stored[chosen.record] = chosen
            tried.append(chosen.record)
            return chosen.record

        return self.train_clip(sample.index, sample.record, replacement,
                               lambda record: self._open_sample(stored[record]))


DATA_FORMATS.register("webdataset", ShardDataset)

__all__ = ["MANIFEST_NAME", "RawSample", "Shard", "ShardDataset", "expand_urls", "open_sample", "read_shard",
           "require_webdataset", "resolve_shards", "rank_span", "round_robin_skips", "shuffled", "worker_runs"]
