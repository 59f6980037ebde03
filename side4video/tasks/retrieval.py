"""Text–video retrieval (Side4Video's second task) behind the task seam: captions as targets, the symmetric
contrastive loss over the global batch, and evaluation by ranking every caption against every video.

Chosen by ``task: {type: retrieval}``; the data section names the reference's files (``data.dataset``: msrvtt,
msvd, vatex, didemo, activitynet or jsonl; ``data.train_csv`` / ``data.val_csv`` / ``data.data_path`` /
``data.features_path``; ``data.max_words``, ``data.max_frames``, ``data.slice_framepos``).

The training step stays the engine's: the frozen image tower's taps go to :class:`RetrievalModel`, whose outputs
(frame embeddings, the clamped temperature, the model) come back to :meth:`RetrievalTask.loss`, which encodes the
batch's captions (frozen text tower: no gradient, no activations kept), gathers texts and videos of every process
and scores them with the model's similarity head.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from ..data.transforms import normalize_frames
from ..errors import ConfigError
from ..files import atomic_write_bytes, atomic_write_json
from ..retrieval.annotations import SPLIT_READERS, CaptionSet, read_caption_lines, read_msrvtt
from ..retrieval.data import TEST_SAMPLING, CaptionedClips, RetrievalVideos, collate_captioned, collate_videos
from ..retrieval.loss import gather_with_grad, symmetric_contrastive_loss
from ..retrieval.metrics import multi_caption_metrics, retrieval_metrics
from ..retrieval.model import (
    CLIP_INIT_LOGIT_SCALE,
    MAX_LOGIT_SCALE,
    SIM_HEADERS,
    VIDEO_HEADS,
    RetrievalModel,
    RetrievalOutputs,
)
from ..retrieval.text import create_text_tower
from .base import TASKS, Evaluation, Task, TrainBatch
from .views import autocast_context

DATASETS = ("msrvtt", "msvd", "vatex", "didemo", "activitynet", "jsonl")


def read_captions(data_cfg: Any, split: str) -> CaptionSet:
    """The captions of ``split`` (``train`` or ``val``) as ``data.dataset`` stores them (see
    :mod:`side4video.retrieval.annotations`)."""
    dataset = str(data_cfg.dataset).lower()
    if dataset == "msrvtt":
        if split == "train":
            return read_msrvtt(data_cfg.train_csv, Path(data_cfg.data_path) / "MSRVTT_data.json")
        return read_msrvtt(data_cfg.val_csv)
    if dataset == "jsonl":
        return read_caption_lines(data_cfg.train_csv if split == "train" else data_cfg.val_csv)
    if dataset in SPLIT_READERS:
        evaluated = "val" if dataset == "activitynet" else "test"   # ActivityNet's test split is val_1
        return SPLIT_READERS[dataset](data_cfg.data_path, "train" if split == "train" else evaluated)
    raise ConfigError(f"data.dataset is {data_cfg.dataset!r}; retrieval reads {', '.join(DATASETS)}")


@TASKS.register("retrieval")
class RetrievalTask(Task):
    """Captions ↔ videos. ``monitor``: text→video R@1.

    Args:
        sim_header: ``wti`` (the reference) or ``meanP``.
        text_chunk: captions scored at once in evaluation (bounds the ``words × frames`` memory of WTI).
        logit_scale_init: the temperature's start (CLIP's ln(1/0.07)) or ``pretrained`` (the weight file's).
        train_text: train the text tower too (the reference does, at ``text_lr_mult`` × lr); costs the text
            tower's activations and gradients.
        text_lr_mult: with ``train_text``, the text tower's lr relative to ``solver.lr`` (its own optimizer groups,
            following the same schedule; the reference's ``coef_lr``, 1e-3); must be > 0. An explicit
            ``solver.lr_mult: {text: ...}`` entry takes precedence. Unused when the text tower is frozen.
        gather_gradient: with several processes, ``local`` (the reference's all-gather: each process keeps the
            gradient of its own embeddings, so after the data-parallel mean the side network's gradient is 1/W of a
            single process's on the same global batch, the similarity head's and temperature's exact) or ``summed``
            (every process's gradient for each embedding summed: W processes x b train exactly as 1 x W b).
        video_head: ``side4video`` (the side network) or ``temporal_transformer`` (a baseline over the frozen
            frame embeddings, CLIP4Clip's ``seqTransf``; ``network.*`` side options then do not apply).
        dsl: also report dual-softmax re-ranked metrics (``dsl_t2v_*``, ``dsl_v2t_*``): each score multiplied by
            the softmax of the scores over the other side's queries at temperature 1/``dsl_scale``. It uses every
            test query at once (a transductive post-process), so it is a separate line, never the main numbers.
    """

    name = "retrieval"
    monitor = "t2v_R1"

    def __init__(self, sim_header: str = "wti", text_chunk: int = 256,
                 logit_scale_init: float | str = CLIP_INIT_LOGIT_SCALE, train_text: bool = False,
                 video_head: str = "side4video", dsl: bool = False, dsl_scale: float = 100.0,
                 text_lr_mult: float = 1e-3, gather_gradient: str = "local"):
        if sim_header not in SIM_HEADERS:
            raise ConfigError(f"task 'retrieval': sim_header must be one of {', '.join(SIM_HEADERS)}, got "
                              f"{sim_header!r}")
        self.sim_header = sim_header
        self.text_chunk = int(text_chunk)
        self.logit_scale_init = logit_scale_init
        self.train_text = bool(train_text)
        try:
            mult = float(text_lr_mult)
        except (TypeError, ValueError):
            mult = float("nan")          # refused below with the value as given
        if not mult > 0:
            raise ConfigError(f"task 'retrieval': text_lr_mult must be > 0, got {text_lr_mult!r}")
        self.text_lr_mult = mult
        if video_head not in VIDEO_HEADS:
            raise ConfigError(f"task 'retrieval': video_head must be one of {', '.join(VIDEO_HEADS)}, got "
                              f"{video_head!r}")
        self.video_head = video_head
        if gather_gradient not in ("local", "summed"):
            raise ConfigError(f"task 'retrieval': gather_gradient must be local or summed, got {gather_gradient!r}")
        self.sum_gradients = gather_gradient == "summed"
        self.dsl, self.dsl_scale = bool(dsl), float(dsl_scale)
        self.val_captions: CaptionSet | None = None

    # -- what the engine builds through the task -------------------------------------------------------------
    def build_model(self, cfg, backbone) -> nn.Module:
        """The retrieval model on ``backbone``: the text tower from the same weight file, a retrieval side network
        with the config's side options."""
        net = cfg.network
        text = create_text_tower(net.arch, net.pretrained, precision=net.backbone_precision,
                                 trainable=self.train_text, quick_gelu=net.quick_gelu,
                                 pretrained_dir=net.pretrained_dir or None)
        if self.video_head == "temporal_transformer":
            return RetrievalModel(backbone, text, logit_scale_init=self.logit_scale_init,
                                  max_words=int(cfg.data.max_words), sim_header=self.sim_header,
                                  video_head=self.video_head, max_frames=int(cfg.data.max_frames),
                                  text_lr_mult=self.text_lr_mult)
        options = dict(side_dim=net.side_dim, layers=net.side_layers, norm=net.side_norm, tap_norm=net.tap_norm,
                       head_norm=True if net.head_norm is None else net.head_norm, fusion_weight=net.fusion_weight,
                       temporal_module=net.temporal_module, side_modules=[dict(m) for m in net.side_modules],
                       mlp_ratio=net.mlp_ratio, drop_path=net.drop_path, grad_checkpointing=net.grad_checkpointing,
                       recompute=net.recompute, sync_bn=net.sync_bn)
        return RetrievalModel(backbone, text, logit_scale_init=self.logit_scale_init,
                              max_words=int(cfg.data.max_words), sim_header=self.sim_header,
                              text_lr_mult=self.text_lr_mult, **options)

    def build_datasets(self, cfg, seed: int):
        """(training set, validation set, their collate functions): one training item per caption, the validation
        videos (the captions are kept by the task for scoring)."""
        data = cfg.data
        common = dict(max_frames=int(data.max_frames), input_size=int(data.input_size),
                      slice_framepos=int(data.slice_framepos), image_tmpl=data.image_tmpl,
                      video_backend=data.video_backend, seed=seed)
        train = CaptionedClips(RetrievalVideos(read_captions(data, "train"), data.features_path,
                                               mode="segment_random", **common), max_retries=int(data.max_retries))
        self.val_captions = read_captions(data, "val")
        val = RetrievalVideos(self.val_captions, data.features_path,
                              mode=TEST_SAMPLING.get(str(data.dataset).lower(), "stride"), **common)
        return train, val, collate_captioned, collate_videos

    # -- training --------------------------------------------------------------------------------------------
    def train_batch(self, raw: Mapping[str, Any], frames: torch.Tensor, mask: torch.Tensor | None,
                    device: torch.device) -> TrainBatch:
        index = raw["caption_index"].to(device)
        return TrainBatch(frames=frames, labels=index, targets=raw["video"].to(device), mask=mask,
                          extra={"captions": list(raw["captions"])})

    def loss(self, outputs: RetrievalOutputs, batch: TrainBatch) -> torch.Tensor:
        model = outputs.model
        tokens, word_mask = model.tokenize(batch.extra["captions"])
        tokens, word_mask = tokens.to(outputs.frames.device), word_mask.to(outputs.frames.device)
        sentence, words = model.encode_text(tokens, word_mask)
        # the whole global batch enters the loss; each process keeps the gradient of its own part (or, summed, of
        # every process's loss for it)
        frames, sentence, words = (gather_with_grad(t.contiguous(), self.sum_gradients)
                                   for t in (outputs.frames, sentence, words))
        word_mask = gather_with_grad(word_mask.contiguous())
        similarity = model.similarity(sentence, words, word_mask, frames)
        return symmetric_contrastive_loss(similarity, model.logit_scale.clamp(max=MAX_LOGIT_SCALE))

    # -- evaluation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, backbone, model: nn.Module, loader, *, device: torch.device, mean: Sequence[float],
                 std: Sequence[float], assembler=None, precision: str = "fp32", progress: bool = False,
                 desc: str = "eval", average: str = "prob", max_views_per_forward: int = 64,
                 flip_permutation: torch.Tensor | None = None, progress_interval: float | None = None) -> Evaluation:
        captions = self.val_captions
        if captions is None:
            raise RuntimeError("RetrievalTask.evaluate needs build_datasets first (it reads the captions)")
        module: RetrievalModel = getattr(model, "module", model)
        was_training = module.training
        module.eval()
        try:
            frames, valid = self._video_embeddings(module, loader, device, mean, std, precision)
            similarity = self._similarities(module, captions, frames, device, precision)
        finally:
            module.train(was_training)
        return self.evaluation(similarity, captions, unreadable=int((~valid).sum()))

    def _video_embeddings(self, model: RetrievalModel, loader, device, mean, std, precision):
        """Every validation video's frame embeddings ``[Nv, T, D]`` (each process its shard, then gathered)."""
        rows: dict[int, torch.Tensor] = {}
        valid: dict[int, bool] = {}
        with autocast_context(device, precision):
            for batch in loader:
                frames = normalize_frames(batch["frames"].to(device), mean, std)
                embeddings = model.encode_video(frames).float().cpu()
                for i, index in enumerate(batch["index"].tolist()):
                    rows[index] = embeddings[i]
                    valid[index] = bool(batch["valid"][i])
        if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            parts: list[Any] = [None] * torch_dist.get_world_size()
            torch_dist.all_gather_object(parts, (rows, valid))
            for part_rows, part_valid in parts:
                rows.update(part_rows)
                valid.update(part_valid)
        order = sorted(rows)
        if order != list(range(len(order))):
            raise RuntimeError(f"retrieval evaluation got {len(order)} videos with gaps in their indices")
        return torch.stack([rows[i] for i in order]), torch.tensor([valid[i] for i in order])

    def _similarities(self, model: RetrievalModel, captions: CaptionSet, frames: torch.Tensor, device,
                      precision: str) -> torch.Tensor:
        """Captions × videos, computed ``text_chunk`` captions at a time (the whole matrix is never one step)."""
        video_frames = frames.to(device)
        out = []
        with autocast_context(device, precision):
            for start in range(0, len(captions.captions), self.text_chunk):
                tokens, mask = model.tokenize(captions.captions[start:start + self.text_chunk])
                tokens, mask = tokens.to(device), mask.to(device)
                sentence, words = model.encode_text(tokens, mask)
                out.append(model.similarity(sentence.float(), words.float(), mask, video_frames).float().cpu())
        return torch.cat(out)

    def evaluation(self, similarity: torch.Tensor, captions: CaptionSet, unreadable: int = 0) -> Evaluation:
        """Metrics of a captions × videos similarity matrix (the reference's multi-caption rules)."""
        if captions.multi_caption:
            result = multi_caption_metrics(similarity, torch.tensor(captions.caption_video))
        else:   # caption i describes video i (1k-A): the reference's single-caption metrics both ways
            result = {"text_to_video": retrieval_metrics(similarity), "video_to_text": retrieval_metrics(similarity.T)}
        metrics: dict[str, Any] = {f"t2v_{k}": float(v) for k, v in result["text_to_video"].items()}
        metrics.update({f"v2t_{k}": float(v) for k, v in result["video_to_text"].items()})
        if self.dsl:   # opt-in, reported apart: re-ranking that looks at every query of the test set
            for key, value in self.dsl_metrics(similarity, captions).items():
                metrics[f"dsl_{key}"] = value
        metrics.update(num_videos=len(captions.videos), num_captions=len(captions.captions), unreadable=unreadable,
                       multi_caption=captions.multi_caption)
        return Evaluation(metrics=metrics, details={"similarity": similarity, "captions": captions,
                                                    "text_to_video": result["text_to_video"],
                                                    "video_to_text": result["video_to_text"]})

    def dsl_metrics(self, similarity: torch.Tensor, captions: CaptionSet) -> dict[str, float]:
        """Dual-softmax re-ranking: text→video scores ``s · softmax_texts(s · dsl_scale)`` (each video's scores
        normalised over the captions), video→text ``s · softmax_videos(s · dsl_scale)``."""
        sim = similarity.double()
        t2v = sim * torch.softmax(sim * self.dsl_scale, dim=0)
        v2t = sim * torch.softmax(sim * self.dsl_scale, dim=1)
        if captions.multi_caption:
            index = torch.tensor(captions.caption_video)
            forward = multi_caption_metrics(t2v, index)["text_to_video"]
            backward = multi_caption_metrics(v2t, index)["video_to_text"]
        else:
            forward, backward = retrieval_metrics(t2v), retrieval_metrics(v2t.T)
        return {**{f"t2v_{k}": float(v) for k, v in forward.items()},
                **{f"v2t_{k}": float(v) for k, v in backward.items()}}

    def write_evaluation(self, evaluation: Evaluation, out_dir: Path, *, class_names: Sequence[str] = (),
                         prefix: str = "") -> None:
        """``{prefix}sims.npz`` (``sim``: captions × videos, ``captions``, ``caption_video``, ``video_ids``) and
        ``{prefix}retrieval.json`` (both directions' metrics)."""
        captions: CaptionSet = evaluation.details["captions"]

        buffer = io.BytesIO()   # np.savez needs a seekable file
        np.savez(buffer, sim=evaluation.details["similarity"].numpy(), captions=np.array(captions.captions),
                 caption_video=np.array(captions.caption_video), video_ids=np.array(captions.videos))
        atomic_write_bytes(out_dir / f"{prefix}sims.npz", buffer.getvalue())
        summary = {"text_to_video": {k: float(v) for k, v in evaluation.details["text_to_video"].items()},
                   "video_to_text": {k: float(v) for k, v in evaluation.details["video_to_text"].items()},
                   "multi_caption": captions.multi_caption,
                   "multi_caption_rule": "video→text: a video's rank counts the videos with a caption scoring above "
                                         "all of its own captions (the reference)"}
        atomic_write_json(out_dir / f"{prefix}retrieval.json", summary)

    def describe(self, metrics: Mapping[str, Any]) -> str:
        return (f"t2v R@1 {metrics['t2v_R1']:.1f} R@5 {metrics['t2v_R5']:.1f} R@10 {metrics['t2v_R10']:.1f} "
                f"MdR {metrics['t2v_MdR']:.1f}  v2t R@1 {metrics['v2t_R1']:.1f}")


__all__ = ["RetrievalTask", "read_captions", "DATASETS"]
