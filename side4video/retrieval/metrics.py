"""Retrieval metrics: R@K (percent), median rank (MdR) and mean rank (MnR), ranks 1-based.

Single-caption sets (MSR-VTT 1k-A: caption ``i`` belongs to video ``i``) use :func:`retrieval_metrics` on the
``[Ntexts, Nvideos]`` similarity matrix for text→video and on its transpose for video→text. Multi-caption sets
(MSVD, VATEX: several captions per video) use :func:`multi_caption_metrics`.

What the reference (HJYao00/Side4Video, Retrieval/metrics.py and main_task_retrieval.py) computes, and what this
module does:

* Rank of a query = 1 + the position of its ground truth in the row sorted by decreasing similarity.
* **Ties.** The reference's single-caption metric sorts each row's values and looks for every position whose value
  equals the ground truth's: a row whose ground truth ties with ``m - 1`` other candidates contributes ``m``
  entries (every tied position), and the R@K / MdR / MnR denominators grow accordingly. That is deterministic but
  gives a tied query ``m`` votes. Its multi-caption text→video metric instead uses ``torch.argsort``, whose order
  among equal values is unspecified (``stable=False``). Here ``ties`` selects one rule for every path:

  - ``"pessimistic"`` (default): a tied query gets the **last** tied position, ``rank = #{candidates with score
    >= ground truth}``. Deterministic, one rank per query, and never flatters a model that outputs constant
    scores (a collapsed model that scores everything equal gets rank N, not 1).
  - ``"optimistic"``: the first tied position, ``1 + #{candidates with score > ground truth}``.
  - ``"expand"``: the reference's single-caption rule (every tied position counted as one entry), to reproduce
    its numbers exactly.

  Without ties all three agree with the reference.
* **NaN** scores count as ``-inf`` (the lowest), as the reference's multi-caption video→text path does.
* **Median.** The single-caption metric (and the multi-caption video→text one) take NumPy's median, the mean of
  the two middle ranks when their number is even; the multi-caption text→video metric takes ``torch.median``,
  the lower of the two. :func:`multi_caption_metrics` follows the reference in each direction.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

__all__ = ["Ties", "multi_caption_metrics", "retrieval_metrics", "summarise_ranks", "target_ranks"]

Ties = Literal["pessimistic", "optimistic", "expand"]
_TIES = ("pessimistic", "optimistic", "expand")


def target_ranks(similarity: Tensor, targets: Tensor | None = None, ties: Ties = "pessimistic") -> Tensor:
    """1-based rank of each query's ground-truth candidate.

    Args:
        similarity: ``[Nq, Nc]`` scores, higher = more similar.
        targets: ``[Nq]`` index of each query's correct candidate; ``None``: query ``i``'s is candidate ``i``.
        ties: see the module docstring. ``"expand"`` returns every tied position, so the result may be longer
            than ``Nq`` (queries in order, each query's positions ascending).

    Returns:
        ``[Nq]`` (or longer, under ``"expand"``) int64 ranks on the CPU, each in ``1 .. Nc``.
    """
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    scores = _without_nan(similarity)
    if targets is None:
        if scores.shape[0] > scores.shape[1]:
            raise ValueError(f"query i's target is candidate i, but there are {scores.shape[0]} queries and "
                             f"only {scores.shape[1]} candidates")
        targets = torch.arange(scores.shape[0], device=scores.device)
    targets = torch.as_tensor(targets, device=scores.device).long()
    if targets.shape != scores.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} must hold one index per query ({scores.shape[0]})")
    truth = scores.gather(1, targets[:, None])                                 # [Nq, 1]
    # counting instead of sorting: exact on ties and O(Nq·Nc)
    above = (scores > truth).sum(dim=1).cpu()
    level = (scores == truth).sum(dim=1).cpu()                                 # >= 1: the ground truth itself
    if ties == "pessimistic":
        return above + level
    if ties == "optimistic":
        return above + 1
    return torch.cat([torch.arange(a + 1, a + n + 1) for a, n in zip(above.tolist(), level.tolist())]
                     or [torch.zeros(0, dtype=torch.long)])


def summarise_ranks(ranks: Tensor, recall_at: Sequence[int] = (1, 5, 10),
                    median: Literal["average", "lower"] = "average") -> dict[str, float]:
    """R@K (percent of ranks ``<= K``) for each ``K`` of ``recall_at``, ``MdR`` and ``MnR`` of 1-based ranks.

    ``median``: ``"average"`` is NumPy's (mean of the two middle values for an even count), ``"lower"`` is
    ``torch.median``'s (the lower middle value); the reference uses each in different places.
    """
    ranks = ranks.detach().to("cpu", torch.float64).flatten()
    if ranks.numel() == 0:
        raise ValueError("no ranks to summarise")
    result = {f"R{k}": float((ranks <= k).sum()) * 100.0 / ranks.numel() for k in recall_at}
    if median == "average":
        ordered = ranks.sort().values
        middle = (ordered.numel() - 1) // 2
        # odd count: the middle value twice; even: the two middle values (NumPy's median averages them)
        result["MdR"] = float((ordered[middle] + ordered[ordered.numel() // 2]) / 2.0)
    elif median == "lower":
        result["MdR"] = float(ranks.median())
    else:
        raise ValueError(f"median must be 'average' or 'lower', got {median!r}")
    result["MnR"] = float(ranks.mean())
    return result


def retrieval_metrics(similarity: Tensor, ties: Ties = "pessimistic",
                      recall_at: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R1, R5, R10 (percent), MdR, MnR of a query×candidate matrix whose query ``i`` matches candidate ``i``.

    Args:
        similarity: ``[Nq, Nc]`` (``Nq <= Nc``); for text→video pass ``[Ntexts, Nvideos]``, for video→text its
            transpose.
        ties: see the module docstring (default: the pessimistic rank).
        recall_at: the ``K`` of the ``R{K}`` keys.

    Returns:
        ``{"R1", "R5", "R10", "MdR", "MnR"}`` as floats; MdR is NumPy's median, as in the reference.
    """
    return summarise_ranks(target_ranks(similarity, ties=ties), recall_at=recall_at, median="average")


def multi_caption_metrics(similarity: Tensor, caption_to_video: Tensor, ties: Ties = "pessimistic",
                          recall_at: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """Text→video and video→text metrics when each video has one or more captions (MSVD, VATEX).

    Args:
        similarity: ``[Ncaptions, Nvideos]`` scores of every caption against every video.
        caption_to_video: ``[Ncaptions]`` the video each caption describes; every video needs at least one
            caption. Captions need not be grouped or sorted (the reference requires them grouped by video, in
            video order, and describes the groups by cut-off points; the numbers are the same).
        ties: see the module docstring.
        recall_at: the ``K`` of the ``R{K}`` keys.

    Returns:
        ``{"text_to_video": {...}, "video_to_text": {...}}``, each with R1, R5, R10, MdR, MnR.

    * text→video: every caption is a query, its video the target among all ``Nvideos``; MdR is the lower median
      (``torch.median``), as the reference's multi-caption text→video metric.
    * video→text: every video is a query and the candidates are the ``Nvideos`` caption *groups*, a group scoring
      the best (max) similarity of its captions to the query video; the target is the query's own group. So a
      video's rank is ``1 + the number of other videos having some caption that beats all of the query's own
      captions`` (pessimistic: ``>=``), as the reference's max over the padded ``[Nvideos, max_captions, Nvideos]``
      tensor gives; MdR is NumPy's median there.
    """
    scores = _without_nan(similarity)
    caption_to_video = torch.as_tensor(caption_to_video, device=scores.device).long()
    n_captions, n_videos = scores.shape
    if caption_to_video.shape != (n_captions,):
        raise ValueError(f"caption_to_video {tuple(caption_to_video.shape)} must give one video per caption "
                         f"({n_captions})")
    if n_captions and (caption_to_video.min() < 0 or caption_to_video.max() >= n_videos):
        raise ValueError(f"caption_to_video must index the {n_videos} videos")
    counts = torch.bincount(caption_to_video, minlength=n_videos)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"videos {missing[:10]} have no caption; every video needs at least one")
    text_to_video = summarise_ranks(target_ranks(scores, caption_to_video, ties=ties), recall_at=recall_at,
                                    median="lower")
    # best[v, w]: the highest similarity of any caption of video v to video w
    best = torch.full((n_videos, n_videos), float("-inf"), dtype=scores.dtype, device=scores.device)
    best = best.scatter_reduce(0, caption_to_video[:, None].expand(-1, n_videos), scores, reduce="amax")
    # queries are videos (rows of best.T), candidates caption groups, video w's own group on the diagonal
    video_to_text = retrieval_metrics(best.T, ties=ties, recall_at=recall_at)
    return {"text_to_video": text_to_video, "video_to_text": video_to_text}


def _without_nan(similarity: Tensor) -> Tensor:
    if similarity.dim() != 2:
        raise ValueError(f"similarity must be a [queries, candidates] matrix, got {tuple(similarity.shape)}")
    similarity = similarity.detach()
    if not similarity.is_floating_point():
        similarity = similarity.double()
    return similarity.masked_fill(torch.isnan(similarity), float("-inf"))
