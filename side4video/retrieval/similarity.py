"""Text–video similarity heads: CLIP4Clip's parameter-free mean pooling (meanP) and DRL's weighted token-wise
interaction (WTI), the head Side4Video's retrieval model uses.

Both return a cosine-scale similarity matrix ``[Nt, Nv]`` (texts × videos) without the logit scale: the scale is
applied by :func:`side4video.retrieval.loss.symmetric_contrastive_loss` during training only, and evaluation ranks
the unscaled scores (a positive scale does not change any rank).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WeightedTokenInteraction", "masked_softmax", "mean_pooled_similarity"]


def mean_pooled_similarity(text_emb: Tensor, frame_emb: Tensor, frame_mask: Tensor) -> Tensor:
    """CLIP4Clip's meanP similarity: the cosine between each text and each video's mean frame.

    Args:
        text_emb: ``[Nt, D]`` one embedding per text (the text tower's end-of-text token, projected).
        frame_emb: ``[Nv, T, D]`` one embedding per frame (CLS token, projected).
        frame_mask: ``[Nv, T]`` bool (or 0/1), true for real frames; padded frames take no part in the mean.

    Returns:
        ``[Nt, Nv]`` cosine similarities in [-1, 1].

    Each frame is L2-normalised before pooling so every frame weighs the same in the mean whatever its norm; the
    mean is renormalised so the result is a cosine. A video without any valid frame pools to the zero vector and
    scores 0 against every text rather than NaN. (Side4Video's own non-WTI path averages the unnormalised frames
    over all T slots instead; it is never used once WTI is on, so the CLIP4Clip form is the one kept here.)
    """
    _check_2d_3d(text_emb, frame_emb, frame_mask)
    weights = frame_mask.to(frame_emb.dtype).unsqueeze(-1)                    # [Nv, T, 1]
    frames = F.normalize(frame_emb, dim=-1) * weights
    # clamp: an all-padded video divides 0 by 1 instead of by 0
    pooled = frames.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)            # [Nv, D]
    return F.normalize(text_emb, dim=-1) @ F.normalize(pooled, dim=-1).T


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = -1) -> Tensor:
    """Softmax of ``logits`` over ``dim`` restricted to the entries where ``mask`` is true.

    Masked entries get weight exactly 0, the valid ones sum to 1. A slice with no valid entry gets all-zero weights
    (a plain softmax over all ``-inf`` would give NaN and poison the whole batch through the loss).
    """
    mask = mask.bool()
    filled = logits.masked_fill(~mask, float("-inf"))
    # rows with no valid entry: give them a finite logit so softmax stays finite, then zero them below
    any_valid = mask.any(dim=dim, keepdim=True)
    filled = filled.masked_fill(~any_valid, 0.0)
    return torch.softmax(filled, dim=dim).masked_fill(~mask, 0.0)


def _weight_network(dim: int) -> nn.Sequential:
    """Linear(D, D)-ReLU-Linear(D, 1): one relevance logit per token, as DRL and Side4Video use."""
    net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 1))
    # the reference initialises every Linear of its model as BERT does (N(0, 0.02), zero bias), so the weights
    # start close to uniform over the valid tokens
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, mean=0.0, std=0.02)
            nn.init.zeros_(layer.bias)
    return net


class WeightedTokenInteraction(nn.Module):
    """DRL's weighted token-wise interaction (WTI), the similarity head of Side4Video's retrieval model.

    For a text with words ``w_i`` and a video with frames ``f_j`` (all L2-normalised):

    * text→video: ``sum_i a_i · max_j cos(w_i, f_j)``, ``a`` a softmax over the text's valid words of the text
      weight network's logits;
    * video→text: ``sum_j b_j · max_i cos(w_i, f_j)``, ``b`` a softmax over the video's valid frames of the video
      weight network's logits;
    * score: the mean of the two.

    The weight networks see the unnormalised embeddings (as in the reference), so a token's norm can inform its
    weight while the matching itself is by cosine.

    Masks, and how this differs from the reference (HJYao00/Side4Video, Retrieval/modules/modeling.py):

    * By default padded words and padded frames never win a max and get weight 0: the max runs over valid entries
      only. The reference instead (1) overwrites the video mask with ones, so zero-padded frames are matched and
      weighted like real ones, and (2) zeroes the cosines of masked pairs rather than excluding them, so a padded
      word (cosine 0) wins a frame's max whenever all the real words have a negative cosine with that frame.
    * ``reference_video_mask=True`` reproduces (1); ``reference_zero_fill=True`` reproduces (2); both together
      give the reference's numbers. They only matter for videos shorter than ``T`` (padded frames) and, for (2),
      for negative cosines.

    The logit scale is not applied here (see the module docstring).

    Memory: the word×frame cosine tensor is ``[Nt, Nv, L, T]``; ``text_chunk`` in :meth:`forward` bounds it to
    ``[text_chunk, Nv, L, T]`` at a time (for evaluation over a whole test set), with identical results.
    """

    def __init__(self, dim: int, reference_video_mask: bool = False, reference_zero_fill: bool = False) -> None:
        super().__init__()
        self.text_weight_fc = _weight_network(dim)
        self.video_weight_fc = _weight_network(dim)
        self.reference_video_mask = reference_video_mask
        self.reference_zero_fill = reference_zero_fill

    def effective_frame_mask(self, frame_emb: Tensor, frame_mask: Tensor) -> Tensor:
        """The frame mask actually used: the given one, or all-true under ``reference_video_mask``."""
        if self.reference_video_mask:
            return torch.ones(frame_emb.shape[:2], dtype=torch.bool, device=frame_emb.device)
        return frame_mask.bool()

    def token_weights(self, word_emb: Tensor, word_mask: Tensor, frame_emb: Tensor,
                      frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The word weights ``[Nt, L]`` and frame weights ``[Nv, T]``: each sums to 1 over its valid tokens."""
        word_weight = masked_softmax(self.text_weight_fc(word_emb).squeeze(-1), word_mask)
        frame_mask = self.effective_frame_mask(frame_emb, frame_mask)
        frame_weight = masked_softmax(self.video_weight_fc(frame_emb).squeeze(-1), frame_mask)
        return word_weight, frame_weight

    def forward(self, word_emb: Tensor, word_mask: Tensor, frame_emb: Tensor, frame_mask: Tensor,
                text_chunk: int | None = None) -> Tensor:
        """Similarity of every text with every video.

        Args:
            word_emb: ``[Nt, L, D]`` the ``L`` token embeddings of each text (projected text-tower outputs).
            word_mask: ``[Nt, L]`` bool (or 0/1), true for real tokens.
            frame_emb: ``[Nv, T, D]`` per-frame video embeddings.
            frame_mask: ``[Nv, T]`` bool (or 0/1), true for real frames.
            text_chunk: process this many texts at a time to bound memory (``None`` or 0: all at once).

        Returns:
            ``[Nt, Nv]`` scores, each a convex combination of cosines (so in [-1, 1]).
        """
        if word_emb.dim() != 3 or frame_emb.dim() != 3 or word_emb.shape[-1] != frame_emb.shape[-1]:
            raise ValueError(f"expected word_emb [Nt, L, D] and frame_emb [Nv, T, D], got {tuple(word_emb.shape)} "
                             f"and {tuple(frame_emb.shape)}")
        if word_mask.shape != word_emb.shape[:2] or frame_mask.shape != frame_emb.shape[:2]:
            raise ValueError(f"masks {tuple(word_mask.shape)} / {tuple(frame_mask.shape)} do not match the "
                             f"embeddings {tuple(word_emb.shape[:2])} / {tuple(frame_emb.shape[:2])}")
        word_mask = word_mask.bool()
        frame_mask = self.effective_frame_mask(frame_emb, frame_mask)
        word_weight, frame_weight = self.token_weights(word_emb, word_mask, frame_emb, frame_mask)
        words = F.normalize(word_emb, dim=-1)
        frames = F.normalize(frame_emb, dim=-1)
        step = word_emb.shape[0] if not text_chunk else text_chunk
        rows = [self._scores(words[s:s + step], word_mask[s:s + step], word_weight[s:s + step],
                             frames, frame_mask, frame_weight)
                for s in range(0, word_emb.shape[0], max(step, 1))]
        if not rows:                                    # no text at all: an empty [0, Nv] matrix
            return frame_emb.new_zeros((0, frame_emb.shape[0]))
        return torch.cat(rows, dim=0)

    def _scores(self, words: Tensor, word_mask: Tensor, word_weight: Tensor, frames: Tensor, frame_mask: Tensor,
                frame_weight: Tensor) -> Tensor:
        """WTI scores ``[n, Nv]`` of ``n`` texts (normalised tokens) against all videos."""
        cosine = torch.einsum("ald,bvd->ablv", words, frames)                     # [n, Nv, L, T]
        valid = word_mask[:, None, :, None] & frame_mask[None, :, None, :]        # [n, Nv, L, T]
        if self.reference_zero_fill:
            # the reference multiplies by the masks: masked pairs score 0 and may win a max
            cosine = cosine * valid.to(cosine.dtype)
            best_frame = cosine.max(dim=-1).values                                # [n, Nv, L]
            best_word = cosine.max(dim=-2).values                                 # [n, Nv, T]
        else:
            cosine = cosine.masked_fill(~valid, float("-inf"))
            # a padded word (or a video/text with no valid token) has no valid partner: its max is -inf; its
            # weight is 0, but 0 · -inf is NaN, so such maxima are set to 0 before weighting
            best_frame = cosine.max(dim=-1).values
            best_frame = best_frame.masked_fill(~valid.any(dim=-1), 0.0)
            best_word = cosine.max(dim=-2).values
            best_word = best_word.masked_fill(~valid.any(dim=-2), 0.0)
        text_to_video = torch.einsum("abl,al->ab", best_frame, word_weight)
        video_to_text = torch.einsum("abv,bv->ab", best_word, frame_weight)
        return (text_to_video + video_to_text) / 2.0


def _check_2d_3d(text_emb: Tensor, frame_emb: Tensor, frame_mask: Tensor) -> None:
    if text_emb.dim() != 2 or frame_emb.dim() != 3 or text_emb.shape[-1] != frame_emb.shape[-1]:
        raise ValueError(f"expected text_emb [Nt, D] and frame_emb [Nv, T, D], got {tuple(text_emb.shape)} and "
                         f"{tuple(frame_emb.shape)}")
    if frame_mask.shape != frame_emb.shape[:2]:
        raise ValueError(f"frame_mask {tuple(frame_mask.shape)} does not match frame_emb {tuple(frame_emb.shape)}")
