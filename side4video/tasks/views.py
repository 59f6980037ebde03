"""Multi-view evaluation: crops × clips views per video, bounded views per forward, exact distributed results.

Every video is scored exactly once across processes (no padded duplicates); unreadable videos are listed
and left out of the metrics explicitly.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.frozen import FrozenEncoder
from ..data.transforms import normalize_frames
from ..engine.distributed import all_gather_objects
from ..engine.logging_utils import progress_bar
from ..models.assembly import run_model
from .metrics import summarize

SCORE_AVERAGES = ("prob", "logit")


def aggregate_views(logits: torch.Tensor, average: str = "prob") -> torch.Tensor:
    """``[B, V, C]`` view logits → ``[B, C]`` video scores: mean of per-view softmax (the reference) or of logits."""
    if average == "prob":
        return F.softmax(logits.float(), dim=-1).mean(dim=1)
    if average == "logit":
        return logits.float().mean(dim=1)
    raise ValueError(f"score average must be one of {SCORE_AVERAGES}, got {average!r}")


def autocast_context(device: torch.device, precision: str):
    """Mixed precision for inference on GPU, matching training; plain fp32 on CPU."""
    if precision in ("bf16", "fp16") and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def forward_views(backbone: FrozenEncoder, model: nn.Module, frames: torch.Tensor, *,
                  max_views_per_forward: int = 64, assembler=None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``frames`` ``[B, V, T, 3, H, W]`` (normalised) → logits ``[B, V, C]``, at most ``max_views_per_forward``
    clips through the networks at once so that 3 crops × 10 clips never exhaust memory."""
    b, v = frames.shape[:2]
    clips = frames.flatten(0, 1)
    if mask is not None and mask.dim() == 2:     # one mask per video, shared by its views
        mask = mask[:, None].expand(b, v, mask.shape[-1])
    clip_mask = None if mask is None else mask.flatten(0, 1)
    logits = run_model(backbone, model, clips, assembler, mask=clip_mask, chunk=max(1, max_views_per_forward))
    return logits.float().reshape(b, v, -1)


@dataclass
class ScoreSet:
    """Per-video scores of one evaluation run, gathered over all processes, sorted by dataset index."""
    scores: np.ndarray            # [N, C] aggregated scores of the readable videos
    labels: np.ndarray            # [N]
    indices: np.ndarray           # [N] dataset indices
    video_ids: list[str]
    num_views: int
    unreadable: list[dict] = field(default_factory=list)   # {"video_id", "index", "reason"}
    distinct_views: list[int | None] = field(default_factory=list)   # per video: how many of its views differ
    out_of_order: list[str] = field(default_factory=list)   # videos whose clips take frames out of temporal order

    def repeated_views(self) -> dict:
        """How many videos were scored with views that coincide (short videos: fewer distinct clip positions than
        clips; small frames: coinciding crops), for the warning and results.json."""
        known = [d for d in self.distinct_views if d is not None]
        repeated = [vid for vid, d in zip(self.video_ids, self.distinct_views) if d is not None and d < self.num_views]
        return {"requested": int(self.num_views), "distinct_min": min(known) if known else None,
                "distinct_max": max(known) if known else None, "videos_with_repeated_views": len(repeated),
                "example": repeated[0] if repeated else None}

    def metrics(self, num_classes: int) -> dict:
        return summarize(self.scores, self.labels, num_classes)


def collect_scores(backbone: FrozenEncoder, model: nn.Module, loader: Iterable, device: torch.device, *,
                   mean: Sequence[float], std: Sequence[float], average: str = "prob",
                   max_views_per_forward: int = 64, precision: str = "fp32", progress: bool = True,
                   desc: str = "eval", flip_permutation: torch.Tensor | None = None, assembler=None,
                   progress_interval: float | None = None, num_classes: int = 0) -> ScoreSet:
    """Score every video of ``loader`` (whose sampler shards the dataset without padding) and gather.

    ``flip_permutation`` (``dataset.flip_permutation()``) maps the logits of horizontally flipped views back to
    the unflipped classes (moving left ↔ right) before views are averaged.
    """
    def forward(frames: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"model": forward_views(backbone, model, frames, max_views_per_forward=max_views_per_forward,
                                       assembler=assembler, mask=mask)}

    was_training = model.training
    model.eval()
    try:
        return score_views(loader, device, forward, ["model"], mean=mean, std=std, average=average,
                           precision=precision, progress=progress, desc=desc,
                           flip_permutation=flip_permutation, progress_interval=progress_interval,
                           num_classes=num_classes)["model"]
    finally:
        model.train(was_training)


@torch.no_grad()
def score_views(loader: Iterable, device: torch.device,
                forward: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]], names: Sequence[str],
                *, mean: Sequence[float], std: Sequence[float], average: str = "prob", precision: str = "fp32",
                progress: bool = True, desc: str = "eval", flip_permutation: torch.Tensor | None = None,
                progress_interval: float | None = None, num_classes: int = 0) -> dict[str, ScoreSet]:
    """The loop of every multi-view evaluation, for one or several models (``names``): per batch, the readable
    videos' normalised views ``[B, V, T, 3, H, W]`` (and their padding mask, if any) go to ``forward``, which
    returns ``[B, V, C]`` logits per name; flipped views are mapped back, views averaged, unreadable videos
    listed; the results are gathered over processes and sorted by dataset index. ``num_classes``: the width of
    the (empty) scores when no video could be read."""
    local: dict[str, list] = {"labels": [], "indices": [], "ids": [], "bad": [], "distinct": [], "disorder": []}
    local.update({f"scores/{name}": [] for name in names})
    num_views = 0
    iterator = loader
    if progress:
        iterator = progress_bar(iterable=loader, desc=desc, leave=False, interval=progress_interval)
    with autocast_context(device, precision):
        for batch in iterator:
            valid = batch["valid"].bool()
            indices = batch["index"].tolist()
            for i in (~valid).nonzero().flatten().tolist():
                reasons = [reason for _, reason in batch["sample_errors"][i]]
                local["bad"].append({"video_id": batch["video_id"][i], "index": indices[i],
                                     "reason": "; ".join(reasons) or "unreadable"})
            if not valid.any():
                continue
            frames = batch["frames"][valid].to(device, non_blocking=True)
            num_views = frames.shape[1]
            frames = normalize_frames(frames, mean, std)
            mask = batch.get("mask")
            if mask is not None:
                mask = mask[valid].to(device, non_blocking=True)
            flipped = batch["flipped"][valid] if flip_permutation is not None and batch["flipped"].any() else None
            for name, logits in forward(frames, mask).items():
                logits = logits.float()
                if flipped is not None:
                    where = flipped.to(logits.device)
                    logits[where] = logits[where][:, flip_permutation.to(logits.device)]
                local[f"scores/{name}"].append(aggregate_views(logits, average).cpu().numpy())
            local["labels"].extend(batch["label"][valid].tolist())
            local["indices"].extend(i for i, ok in zip(indices, valid.tolist()) if ok)
            local["ids"].extend(vid for vid, ok in zip(batch["video_id"], valid.tolist()) if ok)
            distinct = batch.get("distinct_views") or [None] * len(indices)
            local["distinct"].extend(d for d, ok in zip(distinct, valid.tolist()) if ok)
            disorder = batch.get("out_of_order")
            if disorder is not None:
                local["disorder"].extend(vid for vid, bad, ok in zip(batch["video_id"], disorder.tolist(),
                                                                     valid.tolist()) if bad and ok)
    gathered = all_gather_objects(local | {"views": num_views})
    merged = {key: [item for part in gathered for item in part[key]] for key in local}
    indices = np.array(merged["indices"], dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    if len(np.unique(indices)) != len(indices):
        raise RuntimeError("a video was scored twice: the evaluation sampler must not pad")
    labels = np.array(merged["labels"], dtype=np.int64)[order]
    video_ids = [merged["ids"][i] for i in order]
    distinct_views = [merged["distinct"][i] for i in order] if len(merged["distinct"]) == len(order) else []
    unreadable = sorted(merged["bad"], key=lambda b: b["index"])
    views = max(part["views"] for part in gathered)
    out = {}
    for name in names:
        parts = merged[f"scores/{name}"]
        scores = np.concatenate(parts) if parts else np.zeros((0, num_classes), np.float32)
        out[name] = ScoreSet(scores=scores[order], labels=labels, indices=indices[order], video_ids=video_ids,
                             unreadable=unreadable, num_views=views, distinct_views=distinct_views,
                             out_of_order=sorted(merged["disorder"]))
    return out
