"""``RetrievalModel``: Side4Video's text–video retrieval model (frozen CLIP towers, a side network, a temperature).

    frames [B, T, 3, H, W] ─► frozen image tower (per frame, taps of every side layer + the last layer's class token)
                           ─► RetrievalSideNetwork ─► per-frame class-token residuals [B, T, W]
                           ─► the tower's own LN + projection ─► frame embeddings [B, T, D]
    captions ─► tokenize (SOT + max_words-2 BPE tokens + EOT) ─► text tower ─► sentence [N, D], words [N, 77, D]

What trains: the side network (with its zero-initialised ``side_proj``) and the logit scale; the text tower too if
it is built ``trainable`` (the reference's setting, at ``text_lr_mult`` = 1e-3 × the learning rate, asked of the
optimizer through :meth:`RetrievalModel.param_lr_mult`). Frozen towers are held outside the
module tree (:class:`FrozenTowers`), so they never appear in ``parameters()``, ``state_dict()`` or an optimizer;
:meth:`RetrievalModel.to` moves them along (keeping their own precision).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..backbones import create_backbone
from ..backbones.frozen import FrozenEncoder
from ..models.inputs import SideInputs
from .head import ClassTokenHead, FrameTransformer, RetrievalSideNetwork
from .similarity import WeightedTokenInteraction, mean_pooled_similarity
from .text import FrozenTextTower, create_text_tower

__all__ = ["CLIP_INIT_LOGIT_SCALE", "MAX_LOGIT_SCALE", "FrozenTowers", "RetrievalOutputs", "RetrievalModel",
           "create_retrieval_model"]

SIM_HEADERS = ("wti", "meanP")
VIDEO_HEADS = ("side4video", "temporal_transformer")
CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)   # CLIP's initial temperature, ln(1/0.07)
MAX_LOGIT_SCALE = math.log(100)              # the reference clamps the learned scale at ln 100


@dataclass
class RetrievalOutputs:
    """What :meth:`RetrievalModel.forward` gives the task's loss: frame embeddings ``[B, T, D]``, ``exp`` of the
    clamped logit scale, and the model (its text encoder and similarity head)."""
    frames: torch.Tensor
    logit_scale: torch.Tensor
    model: "RetrievalModel"


@dataclass
class FrozenTowers:
    """Frozen modules the retrieval model uses but does not own (a plain holder: not registered as submodules)."""
    image: FrozenEncoder
    text: FrozenTextTower | None = None


class RetrievalModel(nn.Module):
    """Side4Video's retrieval model: frozen image tower + retrieval side network, text tower, logit scale.

    Args:
        backbone: the frozen image encoder (``create_backbone``); it must embed its class token (CLIP ViTs do).
        text_tower: the text tower (:func:`~side4video.retrieval.text.create_text_tower`), frozen or trainable.
        side: the side network; by default ``RetrievalSideNetwork(backbone.info, **side_options)``.
        logit_scale_init: the learned log-temperature's start (CLIP's ln(1/0.07) by default), or ``"pretrained"``
            for the weight file's own (OpenAI: ln 100, which the reference inherits).
        max_words: default caption length for :meth:`tokenize` (the reference: 32).
        sim_header: ``wti`` (DRL's weighted token interaction, the reference's ``--interaction wti``; its weight
            networks train with the side network) or ``meanP`` (cosine of the mean frame embedding).
        video_head: ``side4video`` (the side network, the reference) or ``temporal_transformer`` (a baseline:
            :class:`~side4video.retrieval.head.FrameTransformer` over the frozen frame embeddings, CLIP4Clip's
            ``seqTransf``; no side network).
        text_lr_mult: the trainable text tower's lr relative to the base lr (its own optimizer groups, through
            :meth:`param_lr_mult`; the reference's ``coef_lr``, 1e-3); unused with a frozen text tower.
        side_options: keyword arguments of :class:`RetrievalSideNetwork` (e.g. ``side_dim=320``).
    """

    def __init__(self, backbone: FrozenEncoder, text_tower: FrozenTextTower, side: RetrievalSideNetwork | None = None,
                 *, logit_scale_init: float | str = CLIP_INIT_LOGIT_SCALE, max_words: int = 32,
                 sim_header: str = "wti", video_head: str = "side4video", text_lr_mult: float = 1e-3,
                 **side_options: Any):
        super().__init__()
        if not text_lr_mult > 0:
            raise ValueError(f"text_lr_mult must be > 0, got {text_lr_mult}")
        self.text_lr_mult = float(text_lr_mult)
        if video_head not in VIDEO_HEADS:
            raise ValueError(f"video_head must be one of {', '.join(VIDEO_HEADS)}, got {video_head!r}")
        if sim_header not in SIM_HEADERS:
            raise ValueError(f"sim_header must be one of {', '.join(SIM_HEADERS)}, got {sim_header!r}")
        if side is not None and side_options:
            raise ValueError(f"side options {sorted(side_options)} given with a ready side network")
        self.video_head = video_head
        if video_head == "temporal_transformer":
            # the baseline reads only the frozen last layer's class tokens (its frame embeddings)
            self.side = None
            self.frame_transformer = FrameTransformer(backbone.info.embed_dim,
                                                      max_frames=int(side_options.pop("max_frames", 32)))
        else:
            self.side = side if side is not None else RetrievalSideNetwork(backbone.info, **side_options)
            self.frame_transformer = None
        self.image_head = ClassTokenHead(backbone)
        self.frozen = FrozenTowers(backbone, None if text_tower.trainable else text_tower)
        # a trainable text tower is a registered submodule: it trains and is saved with the model
        self.text = text_tower if text_tower.trainable else None
        if logit_scale_init == "pretrained":
            if text_tower.pretrained_logit_scale is None:
                raise ValueError("logit_scale_init='pretrained' but the weight file has no logit scale")
            logit_scale_init = text_tower.pretrained_logit_scale
        # shape [1], not a scalar: DeepSpeed broadcasts parameters as bytes, which a 0-dim tensor cannot be viewed as
        self.logit_scale = nn.Parameter(torch.tensor([float(logit_scale_init)]))
        self.max_words = max_words
        self.sim_header = sim_header
        self.wti = WeightedTokenInteraction(backbone.info.embed_dim) if sim_header == "wti" else None
        last = backbone.info.num_layers - 1
        # the side layers, and the last layer whose class token the side output is added to
        side_layers = self.side.backbone_layers if self.side is not None else []
        self.tap_layers = sorted({*side_layers, last})

    # -- parts --------------------------------------------------------------------------------------------
    @property
    def backbone(self) -> FrozenEncoder:
        return self.frozen.image

    @property
    def text_tower(self) -> FrozenTextTower:
        return self.text if self.text is not None else self.frozen.text

    @property
    def embed_dim(self) -> int:
        return self.backbone.info.embed_dim

    def param_lr_mult(self) -> dict[str, float]:
        """Parameter-name prefix → lr multiplier, read by ``engine.optim.create_optimizer``: the pretrained text
        tower, when it trains, fine-tunes at a small fraction of the rate the new side network learns at (the
        reference's ``coef_lr``: CLIP's weights would be wrecked at the side network's rate)."""
        return {"text": self.text_lr_mult} if self.text is not None else {}

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)``, the learned inverse temperature, clamped at 100 as the reference (no gradient
        pushes it further once it is there)."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def to(self, *args: Any, **kwargs: Any) -> "RetrievalModel":
        """``nn.Module.to`` for the trainable parts; the frozen towers follow to the same device only."""
        super().to(*args, **kwargs)
        device = self.logit_scale.device
        self.frozen.image.to(device)
        if self.frozen.text is not None:
            self.frozen.text.to(device)
        return self

    # -- video --------------------------------------------------------------------------------------------
    needs_embedding = False   # the engine's clip assembly: no final image embedding needed

    @property
    def backbone_layers(self) -> list[int]:
        """The layers the engine taps for this model (``models.model_inputs``): the side layers and the last."""
        return list(self.tap_layers)

    def video_inputs(self, frames: torch.Tensor) -> SideInputs:
        """Run the frozen image tower once over ``frames [B, T, 3, H, W]``: the taps of :attr:`backbone_layers`
        (backbone precision, no grad), what the engine's clip assembly would give."""
        taps = self.backbone.tap(frames, layers=self.tap_layers, embedding=False)
        return SideInputs(frames, list(taps.cls_tokens), list(taps.patch_tokens), list(taps.layers), None,
                          frames.shape[1])

    def embed_frames(self, inputs: SideInputs) -> torch.Tensor:
        """Taps of :attr:`backbone_layers` → frame embeddings ``[B, T, D]`` (fp32, not L2-normalised)."""
        b, t = inputs.batch_size, inputs.num_frames
        cls_tokens = inputs.cls_tokens[inputs.layers.index(self.tap_layers[-1])].reshape(b, t, -1)
        if self.frame_transformer is not None:
            return self.frame_transformer(self.image_head(cls_tokens))
        picked = [inputs.layers.index(layer) for layer in self.side.backbone_layers]
        side_inputs = SideInputs(inputs.frames, [inputs.cls_tokens[i] for i in picked],
                                 [inputs.patch_tokens[i] for i in picked], list(self.side.backbone_layers), None, t)
        residual = self.side(side_inputs)                                          # [B, T, W]
        return self.image_head(cls_tokens.to(residual.dtype) + residual)          # [B, T, D]

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``[B, T, 3, H, W]`` (normalised as CLIP expects) → frame embeddings ``[B, T, D]`` (fp32, not
        L2-normalised).

        ``frame_mask`` ``[B, T]`` (1/True: a real frame): the embeddings of padded frames are set to zero, so
        nothing of a padding frame reaches a similarity head that ignores the mask. Padded frames still take part
        in the side network's temporal modules and BatchNorm statistics, as in the reference.
        """
        if frames.dim() != 5:
            raise ValueError(f"expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        embeddings = self.embed_frames(self.video_inputs(frames))
        if frame_mask is not None:
            if frame_mask.shape != frames.shape[:2]:
                raise ValueError(f"frame_mask {tuple(frame_mask.shape)} does not match frames {tuple(frames.shape)}")
            embeddings = embeddings * frame_mask.to(embeddings.dtype).unsqueeze(-1)
        return embeddings

    def forward(self, inputs: SideInputs) -> "RetrievalOutputs":
        """The engine's model call (the training step hands the assembled taps): the frame embeddings with what
        the task's loss needs from this model (the temperature and the similarity head, both trained here)."""
        return RetrievalOutputs(frames=self.embed_frames(inputs), logit_scale=self.scale(), model=self)

    # -- similarity ---------------------------------------------------------------------------------------
    def similarity(self, sentence: torch.Tensor, words: torch.Tensor, word_mask: torch.Tensor,
                   frames: torch.Tensor, frame_mask: torch.Tensor | None = None,
                   text_chunk: int | None = None) -> torch.Tensor:
        """Texts × videos similarities ``[Nt, Nv]`` (cosine-based, before the logit scale) by :attr:`sim_header`.

        ``sentence [Nt, D]``, ``words [Nt, L, D]`` with ``word_mask [Nt, L]``; ``frames [Nv, T, D]`` with
        ``frame_mask [Nv, T]`` (None: every frame is real)."""
        if frame_mask is None:
            frame_mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        if self.wti is None:
            return mean_pooled_similarity(sentence, frames, frame_mask)
        return self.wti(words, word_mask, frames, frame_mask, text_chunk=text_chunk)

    # -- text ---------------------------------------------------------------------------------------------
    def tokenize(self, captions: str | Sequence[str], max_words: int | None = None) -> tuple[torch.Tensor,
                                                                                            torch.Tensor]:
        """Captions → ``(tokens [N, 77], mask [N, 77])`` (see :meth:`FrozenTextTower.tokenize`)."""
        return self.text_tower.tokenize(captions, self.max_words if max_words is None else max_words)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens [N, 77]`` → ``(sentence [N, D], words [N, 77, D])`` (see :meth:`FrozenTextTower.encode`)."""
        return self.text_tower.encode(tokens, mask)


def create_retrieval_model(arch: str | Path, pretrained: str | Path | bool | None = None, *,
                           precision: str = "fp32", text_precision: str = "fp32", train_text: bool = False,
                           quick_gelu: bool | None = None, pretrained_dir: str | Path | None = None,
                           logit_scale_init: float | str = CLIP_INIT_LOGIT_SCALE, max_words: int = 32,
                           sim_header: str = "wti", device: str | torch.device | None = None,
                           text_lr_mult: float = 1e-3, **side_options: Any) -> RetrievalModel:
    """Both towers from one CLIP weight file (each through the backbone loader), and a new side network.

    ``precision``/``text_precision``: the frozen towers' (a trainable text tower is fp32); ``train_text``: train
    the text tower (the reference does, at ``text_lr_mult`` = 1e-3 × the learning rate; costs memory);
    ``side_options``: see :class:`RetrievalSideNetwork`. The other arguments are ``create_backbone``'s.
    """
    backbone = create_backbone(arch, pretrained, precision=precision, quick_gelu=quick_gelu,
                               pretrained_dir=pretrained_dir)
    text = create_text_tower(arch, pretrained, precision="fp32" if train_text else text_precision,
                             trainable=train_text, quick_gelu=quick_gelu, pretrained_dir=pretrained_dir)
    model = RetrievalModel(backbone, text, logit_scale_init=logit_scale_init, max_words=max_words,
                           sim_header=sim_header, text_lr_mult=text_lr_mult, **side_options)
    if device is not None:
        model.to(device)
    return model
