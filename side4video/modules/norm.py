"""BatchNorm over the channel of channel-last tokens, optionally synchronised across processes on any backend.

``torch.nn.SyncBatchNorm`` refuses CPU tensors; this one all-reduces the batch statistics with a
differentiable collective, so a 2-process gloo run normalises exactly like a 1-process run over the same
global batch (and NCCL runs work the same way).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce
from torch.utils.checkpoint import checkpoint

_RECOMPUTING = threading.local()


@contextlib.contextmanager
def recomputing_forward() -> Iterator[None]:
    """Inside, every TokenBatchNorm computes what its forward computed without updating its running statistics:
    the context a recomputation in backward (activation checkpointing) runs in, so statistics move once per step."""
    previous = getattr(_RECOMPUTING, "active", False)
    _RECOMPUTING.active = True
    try:
        yield
    finally:
        _RECOMPUTING.active = previous


def checkpoint_without_double_updates(function, *args):
    """``torch.utils.checkpoint`` (non-reentrant) whose recomputation leaves BatchNorm running statistics alone."""
    if torch.compiler.is_compiling():
        # torch.compile traces the checkpoint as one region and recomputes it from its graph, which does not
        # replay the statistics' update (it cannot trace a context_fn either)
        return checkpoint(function, *args, use_reentrant=False)
    return checkpoint(function, *args, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), recomputing_forward()))


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm on ``[..., C]`` (the reference's BatchNorm3d on (B, C, T, h, w), without the permutes).

    With ``sync=True`` and several processes, training statistics are computed over the global batch.
    """

    def __init__(self, num_features: int, *, sync: bool = False, affine: bool = True, eps: float = 1e-5,
                 momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.sync = sync

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if getattr(_RECOMPUTING, "active", False) and self.training and self.track_running_stats:
            # the same operations as the first forward (a checkpoint compares what they keep), but with momentum 0
            # and the step counter rolled back: the running statistics are not moved a second time
            momentum, self.momentum = self.momentum, 0.0
            try:
                out = self._global_batch_norm(flat) if self.synchronised else super().forward(flat)
            finally:
                self.momentum = momentum
                self.num_batches_tracked.sub_(1)
            return out.view_as(x)
        if not self.synchronised:
            return super().forward(flat).view_as(x)
        return self._global_batch_norm(flat).view_as(x)

    @property
    def synchronised(self) -> bool:
        return bool(self.training and self.sync and dist.is_available() and dist.is_initialized()
                    and dist.get_world_size() > 1)

    def pure(self, x: torch.Tensor, weight: torch.Tensor | None = None,
             bias: torch.Tensor | None = None) -> torch.Tensor:
        """What :meth:`forward` computes on ``x``, without updating the running statistics (for recomputation
        in backward); ``weight``/``bias`` stand in for the affine parameters. Not for synchronised statistics."""
        flat = x.reshape(-1, x.shape[-1])
        if self.training or not self.track_running_stats:
            out = torch.nn.functional.batch_norm(flat, None, None, weight, bias, True, 0.0, self.eps)
        else:
            out = torch.nn.functional.batch_norm(flat, self.running_mean, self.running_var, weight, bias, False,
                                                 0.0, self.eps)
        return out.view_as(x)

    def _global_batch_norm(self, flat: torch.Tensor) -> torch.Tensor:
        compute = flat.float()
        count = torch.full((1,), float(compute.shape[0]), device=compute.device)
        stats = all_reduce(torch.cat([compute.sum(0), (compute * compute).sum(0), count]))
        channels = compute.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels:2 * channels] / total - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            if momentum:             # 0 in a recomputation (see recomputing_forward): nothing to update
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return self._normalise(compute, mean, var, flat.dtype)

    def _normalise(self, compute: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, dtype: torch.dtype):
        out = (compute - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.float() + self.bias.float()
        return out.to(dtype)


__all__ = ["TokenBatchNorm", "checkpoint_without_double_updates", "recomputing_forward"]
