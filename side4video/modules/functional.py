"""Shared math of the side network: the depthwise temporal convolution on channel-last tokens, and a linear layer
whose input is recomputed in backward instead of kept.

``recomputed_linear(x, weight, bias, forward_fn, recompute_fn)`` computes ``linear(f(x))`` but keeps only ``x``
for backward (not ``f(x)``): in backward ``f(x)`` is recomputed from ``x`` and autograd differentiates through
it. ``f`` must be cheap (a norm, GELU, the depthwise temporal conv, a head merge); the matmul itself is never
recomputed. It saves one activation tensor per use, e.g. the LayerNorm output of width W that the tap
projection would otherwise keep for every tapped layer, or the GELU output of the MLP (4·D per token).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def temporal_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num_frames: int, *,
                       causal: bool = False, extend: Callable[[torch.Tensor, int], torch.Tensor] | None = None
                       ) -> torch.Tensor:
    """Depthwise convolution over time on channel-last tokens.

    ``x [B*T, N, C]`` (frame-major rows), ``weight [C, k]`` (k odd), ``bias [C]`` → ``[B*T, N, C]`` with
    ``y_t = sum_j weight[:, j] * x_{t + j - k//2} + bias``, zero-padded at both ends: the reference's
    ``Conv3d(C, C, (k, 1, 1), padding=(k//2, 0, 0), groups=C)`` without the permutes to ``(B, C, T, h, w)``.

    ``causal``: the same taps shifted into the past, ``y_t = sum_j weight[:, j] * x_{t + j - (k-1)} + bias``;
    the k-1 frames before the first come from ``extend(seq [B, T, N, C], k-1)`` (streaming history, see
    ``TemporalHistory.extend``), zeros by default.
    """
    k = weight.shape[1]
    seq = x.reshape(-1, num_frames, *x.shape[1:])                     # [B, T, N, C]
    if causal:
        padded = extend(seq, k - 1) if extend is not None else F.pad(seq, (0, 0, 0, 0, k - 1, 0))
    else:
        padded = F.pad(seq, (0, 0, 0, 0, k // 2, k // 2))
    weight = weight.to(x.dtype)
    out = padded[:, 0:num_frames] * weight[:, 0]
    for j in range(1, k):
        out = out + padded[:, j:j + num_frames] * weight[:, j]
    if bias is not None:
        out = out + bias.to(x.dtype)
    return out.reshape(x.shape)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _RecomputedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, forward_fn, recompute_fn, *params):
        ctx.recompute_fn = recompute_fn
        ctx.autocast = _autocast_state(x.device.type)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, *(() if bias is None else (bias,)), *params)
        return F.linear(forward_fn(x), weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        x, weight = saved[0], saved[1]
        bias = saved[2] if ctx.has_bias else None
        params = saved[3:] if ctx.has_bias else saved[2:]
        need_x, need_weight, need_bias = ctx.needs_input_grad[0:3]
        need_params = ctx.needs_input_grad[5:]
        enabled, dtype = ctx.autocast
        with torch.enable_grad():
            inputs = [x.detach().requires_grad_(need_x)]
            inputs += [p.detach().requires_grad_(need) for p, need in zip(params, need_params)]
            with torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
                recomputed = ctx.recompute_fn(*inputs)
        compute = grad_out.dtype
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        grad_weight = grad_bias = None
        if need_weight:
            flat_input = recomputed.detach().to(compute).reshape(-1, weight.shape[1])
            grad_weight = (flat_grad.t() @ flat_input).to(weight.dtype)
        if need_bias:
            grad_bias = flat_grad.sum(0).to(bias.dtype)
        wanted = [tensor for tensor in inputs if tensor.requires_grad]
        grads = iter(())
        if wanted:
            grad_input = (grad_out @ weight.to(compute)).to(recomputed.dtype)
            grads = iter(torch.autograd.grad(recomputed, wanted, grad_input))
        grad_x = next(grads) if inputs[0].requires_grad else None
        grad_params = [next(grads) if tensor.requires_grad else None for tensor in inputs[1:]]
        return (grad_x, grad_weight, grad_bias, None, None, *grad_params)


def recomputed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      forward_fn: Callable[[torch.Tensor], torch.Tensor],
                      recompute_fn: Callable[..., torch.Tensor], params: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """``F.linear(forward_fn(x), weight, bias)``, keeping only ``x`` (and ``params``) for backward.

    ``recompute_fn(x, *params)`` must return what ``forward_fn(x)`` returned, as a differentiable function of
    ``x`` and ``params`` (the parameters ``forward_fn`` uses, e.g. a norm's weight and bias, so that they get
    gradients); ``forward_fn`` may have side effects that must happen once (BatchNorm's running statistics).
    Autocast is honoured: the recomputation runs under the autocast state of the forward pass.
    """
    if torch.compiler.is_compiling() or not torch.is_grad_enabled() or not (
            x.requires_grad or weight.requires_grad or any(p.requires_grad for p in params)):
        # (under torch.compile the graph partitioner decides itself what to keep and what to recompute)
        return F.linear(forward_fn(x), weight, bias)
    return _RecomputedLinear.apply(x, weight, bias, forward_fn, recompute_fn, *params)


__all__ = ["recomputed_linear", "temporal_depthwise"]
