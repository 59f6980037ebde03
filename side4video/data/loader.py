"""Index samplers for (distributed) training and evaluation, collate functions, ``create_loader`` and
``loader_options`` (the loader settings of ``cfg.data``)."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


class TrainSampler(Sampler[int]):
    """A per-epoch permutation shared by all ranks; rank r takes ``perm[r::num_replicas]``.

    Batch k of W ranks with B/W clips each therefore covers the same samples as batch k of one rank
    with B clips, and the order depends only on ``(seed, epoch)``. ``drop_last`` truncates the
    permutation to a multiple of ``num_replicas``; otherwise it is padded from its own start so that
    every rank gets the same number of samples. ``set_start(k)`` skips the first k samples of this
    rank's order (mid-epoch resume) and lasts until the next ``set_epoch``.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        if num_samples < 1:
            raise ValueError("TrainSampler needs at least one sample")
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.start = 0

    def set_start(self, start: int) -> None:
        if start < 0:
            raise ValueError(f"start must be non-negative, got {start}")
        self.start = start

    def _rank_order(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        if self.drop_last:
            order = order[:len(order) - len(order) % self.num_replicas]
        else:
            padding = -len(order) % self.num_replicas
            order = np.concatenate([order, np.resize(order, padding)])
        return order[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._rank_order()[self.start:].tolist())

    def __len__(self) -> int:
        total = self.num_samples
        per_rank = total // self.num_replicas if self.drop_last else -(-total // self.num_replicas)
        return max(per_rank - self.start, 0)


class ShardedEvalSampler(Sampler[int]):
    """Rank r gets ``r, r + W, r + 2W, ...``: every sample exactly once over all ranks, no padding
    (so ranks may differ by one sample; gather results with variable sizes)."""

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_samples, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_samples, self.num_replicas))


def collate_train(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Training batch: views flattened into the batch, sample-major.

    ``frames [sum V, n, 3, S, S]``, ``label [sum V]``, ``index [B]``, ``errors`` (all samples' failed
    reads, concatenated) and ``num_samples`` = B.

    Samples to be augmented on the training device (``data.augment_on: device``) keep their decoded clips:
    ``frames`` is then the list of B clips ``[n, 3, h_i, w_i]`` and ``augment`` the list of each one's view
    parameters (``side4video.data.device_augment.batch_frames`` makes the views).
    """
    batch = dict(label=torch.cat([s["label"] for s in samples]),
                 index=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
                 errors=[error for s in samples for error in s["errors"]],
                 num_samples=len(samples))
    if "augment" in samples[0]:
        return dict(frames=[s["frames"] for s in samples], augment=[list(s["augment"]) for s in samples], **batch)
    return dict(frames=torch.cat([s["frames"] for s in samples]), **batch)


def collate_eval(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Evaluation batch: ``frames [B, V, n, 3, S, S]``, ``label [B]`` (the video's label: view 0 is never
    flipped), ``index [B]``, ``video_id`` list, ``valid`` bool ``[B]``, ``errors`` concatenated and
    ``sample_errors`` (each video's own list, so reasons are never attributed to the wrong video) and
    ``flipped`` bool ``[B, V]`` (horizontally flipped views, e.g. the second half of 10-crop testing),
    ``distinct_views`` (per video: how many of its views differ; None if unreadable) and ``out_of_order`` bool
    ``[B]`` (a clip's frames not in temporal order)."""
    return dict(frames=torch.stack([s["frames"] for s in samples]),
                label=torch.stack([s["label"][0] for s in samples]),
                index=torch.tensor([s["index"] for s in samples], dtype=torch.int64),
                video_id=[s["video_id"] for s in samples],
                valid=torch.tensor([s["valid"] for s in samples], dtype=torch.bool),
                errors=[error for s in samples for error in s["errors"]],
                sample_errors=[list(s["errors"]) for s in samples],
                flipped=torch.stack([s["flipped"] for s in samples]),
                distinct_views=[s.get("distinct_views") for s in samples],
                out_of_order=torch.tensor([bool(s.get("out_of_order", False)) for s in samples], dtype=torch.bool))


def create_loader(dataset: Dataset, batch_size: int, *, sampler: Sampler | None = None, num_workers: int = 0,
                 collate_fn: Callable[[Sequence[dict]], dict] | None = None, pin_memory: bool = False,
                 persistent_workers: bool = False, prefetch_factor: int | None = None,
                 drop_last: bool = False, multiprocessing_context: str | None = None) -> DataLoader:
    """A DataLoader over ``dataset``; ``collate_fn`` defaults to collate_train / collate_eval by split.

    Batch order comes from ``sampler`` (sequential if None). ``pin_memory`` is ignored without CUDA and
    ``persistent_workers``/``prefetch_factor``/``multiprocessing_context`` without workers, so one call
    works on every machine. Worker processes need no seeding: samples draw from (seed, epoch, index).
    A stream (an ``IterableDataset``: ``data.format: webdataset``) orders itself and splits itself over processes and
    workers, so ``sampler`` is ignored for it, and it is told ``batch_size`` (it deals whole batches to workers).
    """
    if isinstance(dataset, IterableDataset):
        sampler = None
        if hasattr(dataset, "set_batch_size"):
            dataset.set_batch_size(batch_size)
    if collate_fn is None:
        collate_fn = collate_train if getattr(dataset, "split", "train") == "train" else collate_eval
    worker_options: dict[str, Any] = {}
    if num_workers > 0:
        worker_options["persistent_workers"] = persistent_workers
        if prefetch_factor is not None:
            worker_options["prefetch_factor"] = prefetch_factor
        if multiprocessing_context is not None:
            worker_options["multiprocessing_context"] = multiprocessing_context
    # A private generator: creating an iterator draws a worker base seed, which must not consume the global
    # torch RNG (dropout, drop-path, mixup draw from it; a resumed run has to replay it exactly).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, pin_memory=pin_memory and torch.cuda.is_available(),
                      drop_last=drop_last, generator=torch.Generator().manual_seed(0), **worker_options)


def loader_options(data_cfg: Any, *, device_type: str = "cpu", persistent_workers: bool = True) -> dict[str, Any]:
    """``create_loader`` keyword arguments from a validated data section: ``num_workers`` (``data.workers``),
    ``pin_memory`` (``data.pin_memory``, on CUDA devices only), ``prefetch_factor`` (``data.prefetch_factor``,
    only with workers: batches each worker prepares ahead) and ``persistent_workers`` (only with workers)::

        create_loader(train_set, cfg.data.batch_size, sampler=sampler, drop_last=True,
                     **loader_options(cfg.data, device_type=device.type))
    """
    workers = int(data_cfg.workers)
    options: dict[str, Any] = dict(num_workers=workers, pin_memory=bool(data_cfg.pin_memory) and device_type == "cuda",
                                   persistent_workers=persistent_workers and workers > 0)
    if workers > 0:
        options["prefetch_factor"] = int(data_cfg.prefetch_factor)
    return options
