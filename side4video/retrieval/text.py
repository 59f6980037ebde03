"""The text tower of the retrieval model: open_clip's CLIP text encoder, frozen by default, and its tokenizer.

:func:`create_text_tower` loads the text tower from the same weight file, through the same loader
(:func:`~side4video.backbones.create_backbone`), as the image backbone: the two towers always come from one
checkpoint and make the same QuickGELU decision.

Tokenisation follows Side4Video's retrieval data loaders (CLIP4Clip's convention): a caption becomes
``[SOT] + its first max_words-2 BPE tokens + [EOT]``, the mask is 1 on those tokens; the row is padded with zeros to
CLIP's context of 77 (the reference pads to ``max_words`` and slices the position embedding instead: with CLIP's
causal mask no token sees a later one, so the real tokens' features are the same).

:meth:`FrozenTextTower.encode` returns the sentence embedding (the EOT token's projected feature, CLIP's
``encode_text``) and every token's projected feature (the word embeddings DRL's weighted token interaction reads).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer
from torch import nn

from ..backbones import create_backbone, resolve_arch
from ..backbones.frozen import PRECISIONS
from ..errors import ConfigError, WeightsError

__all__ = ["FrozenTextTower", "create_text_tower", "tokenizer_for", "truncate_caption_ids", "text_projection"]


def text_projection(model: nn.Module) -> nn.Parameter | nn.Linear | None:
    """The projection from the text width to the joint embedding space of an open_clip model.

    The one place that reaches into open_clip's module layout: ``CLIP`` keeps its text parts (``text_projection``
    included) on the model itself, ``CustomTextCLIP`` (EVA-CLIP) in its ``text`` tower. open_clip has no public
    accessor for the per-token projected features, which the word embeddings need.
    """
    owner = model.text if hasattr(model, "text") else model
    if not hasattr(owner, "text_projection"):
        raise ConfigError(f"{type(model).__name__} has no CLIP text projection: not a supported text tower")
    return owner.text_projection


def _project(projection: nn.Parameter | nn.Linear | None, hidden: torch.Tensor) -> torch.Tensor:
    """``[..., W]`` → ``[..., D]``, as open_clip applies its text projection (a matrix, a Linear, or none)."""
    if projection is None:
        return hidden
    if isinstance(projection, nn.Linear):
        return projection(hidden)
    return hidden @ projection


def truncate_caption_ids(ids: Sequence[int], max_words: int, sot: int, eot: int) -> list[int]:
    """``[sot] + ids[:max_words-2] + [eot]``: the reference's truncation (start and end tokens always kept)."""
    if max_words < 2:
        raise ValueError(f"max_words must leave room for the start and end tokens (>= 2), got {max_words}")
    return [sot, *list(ids)[:max_words - 2], eot]


def tokenizer_for(arch: str | Path) -> SimpleTokenizer:
    """open_clip's BPE tokenizer for an architecture (name or JSON config), with the config's tokenizer options.

    Only CLIP's BPE tokenizer is supported: the reference's truncation is defined on it (and the text tower pools
    at the highest token id, CLIP's end-of-text token).
    """
    text_cfg = resolve_arch(arch).model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name"):
        raise ConfigError(f"{arch}: retrieval supports CLIP's BPE tokenizer only, not Hugging Face tokenizers "
                          f"({text_cfg.get('hf_tokenizer_name') or text_cfg.get('hf_model_name')})")
    return SimpleTokenizer(context_length=int(text_cfg.get("context_length", 77)),
                           **dict(text_cfg.get("tokenizer_kwargs", {})))


class FrozenTextTower(nn.Module):
    """open_clip's text encoder (the image tower removed) with CLIP's tokenizer.

    Frozen by default: no parameter requires grad, the tower stays in eval mode, and :meth:`encode` keeps no
    autograd graph. ``trainable=True`` trains it as the reference does (its script trains the text tower at
    1e-3 × the learning rate): every parameter then requires grad and the backward pass through the 12-layer text
    transformer costs activation memory for every caption of the batch (and optimizer state for ~63M parameters
    with ViT-B). A trainable tower is kept in fp32 (use autocast for mixed precision).

    Args:
        clip_model: an open_clip ``CLIP``/``CustomTextCLIP`` holding the loaded text tower (its image tower, if
            still there, is dropped).
        tokenizer: the model's BPE tokenizer (:func:`tokenizer_for`).
        precision: ``fp32`` | ``bf16`` | ``fp16`` for a frozen tower; outputs are returned in fp32.
        trainable: train the tower (see above).
    """

    def __init__(self, clip_model: nn.Module, tokenizer: SimpleTokenizer, *, precision: str = "fp32",
                 trainable: bool = False):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"text tower precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if trainable and precision != "fp32":
            raise ValueError("a trainable text tower keeps fp32 weights; use autocast for mixed precision")
        scale = getattr(clip_model, "logit_scale", None)
        # the weight file's learned temperature (OpenAI: ln 100), for a retrieval model that wants to start from it
        self.pretrained_logit_scale: float | None = float(scale.detach().reshape(-1)[0]) if scale is not None else None
        for name in ("visual", "logit_scale", "logit_bias"):     # not part of the text tower (and must not train)
            if hasattr(clip_model, name):
                delattr(clip_model, name)
        self.model = clip_model
        self.tokenizer = tokenizer
        self.context_length = int(clip_model.context_length)
        if tokenizer.context_length != self.context_length:
            raise ConfigError(f"tokenizer context {tokenizer.context_length} != text tower context "
                              f"{self.context_length}")
        self.trainable = trainable
        self.dtype = PRECISIONS[precision]
        self.model.to(self.dtype)
        self.model.requires_grad_(trainable)
        self.train()        # frozen: eval mode for good; trainable: the usual default

    @property
    def embed_dim(self) -> int:
        """D, the width of the joint embedding space."""
        projection = text_projection(self.model)
        if projection is None:
            return int(self.model.transformer.width)
        return int(projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1])

    def train(self, mode: bool = True) -> "FrozenTextTower":
        """A frozen tower stays in eval mode whatever ``mode`` is; a trainable one follows it."""
        return super().train(mode and self.trainable)

    # -- tokens -------------------------------------------------------------------------------------------
    def tokenize(self, captions: str | Sequence[str], max_words: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions → ``(tokens [N, 77] int64, mask [N, 77] int64)``.

        Each row is ``[SOT] + first max_words-2 BPE tokens + [EOT]``, zero-padded; the mask is 1 on those
        ``<= max_words`` tokens, so every non-zero mask entry lies in the first ``max_words`` columns (slicing
        ``[:, :max_words]`` off tokens, mask and word embeddings loses nothing).
        """
        if isinstance(captions, str):
            captions = [captions]
        if max_words > self.context_length:
            raise ValueError(f"max_words {max_words} exceeds the text context ({self.context_length})")
        sot, eot = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        tokens = torch.zeros(len(captions), self.context_length, dtype=torch.long)
        mask = torch.zeros_like(tokens)
        for row, caption in enumerate(captions):
            ids = truncate_caption_ids(self.tokenizer.encode(caption), max_words, sot, eot)
            tokens[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        return tokens, mask

    # -- features -----------------------------------------------------------------------------------------
    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens [N, 77]`` → ``(sentence [N, D], words [N, 77, D])``, both fp32.

        ``sentence`` is CLIP's ``encode_text`` (the projected feature of the end-of-text token, the highest id);
        ``words`` holds every token's projected feature (final LayerNorm, then the text projection). ``mask``
        (``[N, 77]``, 1 on real tokens) zeroes the padding positions of ``words``; it does not change any real
        token's feature (CLIP's text attention is causal). Gradients reach the tower only if it is trainable.
        """
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"expected tokens [N, {self.context_length}], got {tuple(tokens.shape)}")
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            if self.trainable:
                sentence, hidden = self._forward(tokens)
            else:
                # a frozen tower runs in its own precision whatever autocast the caller is under
                with torch.autocast(tokens.device.type, enabled=False):
                    sentence, hidden = self._forward(tokens)
            words = _project(text_projection(self.model), hidden)
        words = words.float()
        if mask is not None:
            words = words * mask.to(words.dtype).unsqueeze(-1)
        return sentence.float(), words

    def _forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # open_clip's public forward_intermediates: one pass gives encode_text's pooled feature and the last
        # block's tokens through the final LayerNorm (what CLIP pools from)
        out = self.model.forward_intermediates(text=tokens, text_indices=1, normalize=False,
                                               normalize_intermediates=True)
        return out["text_features"], out["text_intermediates"][-1]

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(tokens, mask)


def create_text_tower(arch: str | Path, pretrained: str | Path | bool | None = None, *, precision: str = "fp32",
                      trainable: bool = False, quick_gelu: bool | None = None,
                      pretrained_dir: str | Path | None = None,
                      device: str | torch.device | None = None) -> FrozenTextTower:
    """The text tower of the CLIP weights that :func:`~side4video.backbones.create_backbone` would load.

    Same arguments as ``create_backbone`` (``arch``: a name or an open_clip JSON config; ``pretrained``: the weight
    file, ``None`` for the conventional one, ``False`` for random weights); the file is read and checked by the
    backbone loader (every text tensor must be present), then the image tower is dropped. The image backbone
    is loaded separately (``create_backbone``), so the file is read twice, once per tower.
    """
    loaded = create_backbone(arch, pretrained, precision="fp32", quick_gelu=quick_gelu,
                             pretrained_dir=pretrained_dir, keep_text_tower=True)
    if not loaded.has_text_tower:
        raise WeightsError(f"{arch}: these weights have no text tower")
    tower = FrozenTextTower(loaded.model, tokenizer_for(arch), precision=precision, trainable=trainable)
    if device is not None:
        tower.to(device)
    return tower
