"""The retrieval training objective: the symmetric (text→video and video→text) InfoNCE loss over a batch's
similarity matrix, the logit-scale clamp, and an all-gather that keeps the local gradient so every rank can score
its texts against the whole global batch of videos (and vice versa).

Distributed use (as in the reference, HJYao00/Side4Video Retrieval/): every rank gathers the embeddings of all
ranks with :func:`gather_with_grad`, computes the same global ``[N, N]`` similarity matrix and the same global loss,
and back-propagates only into its own embeddings (the gathered copies of the other ranks' embeddings carry no
gradient). The gradients of the parameters producing the embeddings, **summed** over the ranks, then equal the
gradient of one process holding the whole batch; the logit scale, which every rank uses directly, gets the full
gradient on each rank. DistributedDataParallel averages gradients, so under DDP the embedding path's gradient is
``1 / world_size`` of the single-process one while the logit scale's is exact; the reference trains this way and
its learning rates are set for it. ``sum_gradients=True`` (the task's ``gather_gradient: summed``) instead sums
every rank's gradient for each slot (an all-reduce per backward): each rank gets ``world_size`` times its local
gradient, which the mean turns into the exact single-process gradient, so W processes x b train exactly as
1 process x W b.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MAX_LOGIT_SCALE", "clamp_logit_scale_", "gather_with_grad", "symmetric_contrastive_loss"]

#: the largest multiplier of the similarities: CLIP caps its temperature at 1/100 so the logits cannot grow
#: without bound (openai/CLIP#46); the reference clamps the log scale at ln 100 after every optimizer step
MAX_LOGIT_SCALE = 100.0


def symmetric_contrastive_loss(similarity: Tensor, logit_scale: Tensor) -> Tensor:
    """Mean of the text→video and video→text cross-entropies of a square similarity matrix.

    Args:
        similarity: ``[N, N]`` cosine similarities, rows = texts, columns = videos; pair ``i`` (text ``i``,
            video ``i``) is the positive, every other entry of its row (column) a negative.
        logit_scale: the learnt **log** scale (a 0-d parameter, CLIP's ``logit_scale``); the logits are
            ``logit_scale.exp() * similarity``.

    Returns:
        A scalar: ``(CE(rows) + CE(columns)) / 2``, each CE averaged over the ``N`` pairs.

    The scale is used as ``logit_scale.exp()`` without clamping, as the reference does: the bound of 100 is kept by
    calling :func:`clamp_logit_scale_` on the parameter after each optimizer step, so the parameter itself (not
    only its use here) never exceeds ln 100 and its gradient is never silently cut off inside the loss.
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square [N, N] matrix, got {tuple(similarity.shape)}")
    logits = logit_scale.exp() * similarity
    targets = torch.arange(logits.shape[0], device=logits.device)
    text_to_video = F.cross_entropy(logits, targets)
    video_to_text = F.cross_entropy(logits.T, targets)
    return (text_to_video + video_to_text) / 2.0


def clamp_logit_scale_(logit_scale: Tensor, max_scale: float = MAX_LOGIT_SCALE) -> Tensor:
    """Clamp a log-scale parameter in place so ``logit_scale.exp() <= max_scale``; returns it.

    Call after ``optimizer.step()`` (the reference does, with ``max_scale`` 100). Done under ``no_grad`` on the
    parameter's data so autograd never records it; only the upper bound is enforced, as in the reference.
    """
    with torch.no_grad():
        logit_scale.clamp_(max=math.log(max_scale))
    return logit_scale


def gather_with_grad(tensor: Tensor, sum_gradients: bool = False) -> Tensor:
    """Concatenate ``tensor`` from every rank of the default process group along dim 0, rank order.

    Args:
        tensor: ``[b, ...]`` this rank's part; every rank must pass the same shape and dtype.

    Returns:
        ``[world_size · b, ...]``; rows ``rank·b : (rank+1)·b`` are ``tensor`` itself (so gradients reach this rank's
        computation), the other ranks' rows are detached copies. ``tensor`` unchanged when ``torch.distributed`` is
        unavailable, not initialised, or the world size is 1.

    This is the reference's ``AllGather`` (whose backward returns this rank's slice of the gradient), written as
    a gather without autograd followed by putting the local tensor back into its slot: no communication in the
    backward pass. ``sum_gradients``: every slot's gradient summed over the ranks in the backward instead (exact
    single-process gradients under the data-parallel mean). See the module docstring.
    """
    if not dist.is_available() or not dist.is_initialized():
        return tensor
    world_size = dist.get_world_size()
    if world_size == 1:
        return tensor
    if sum_gradients:
        return _GatherSummingGradients.apply(tensor.contiguous())
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


class _GatherSummingGradients(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradient of the gathered tensor over the ranks and returns this
    rank's slice: the gradient of the sum of every rank's loss with respect to this rank's part."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]
