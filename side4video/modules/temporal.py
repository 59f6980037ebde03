"""Temporal mixers for side blocks: ``(B, C, T, h, w) → (B, C, T, h, w)``.

A side block calls its mixer inside a residual branch (``x + mixer(norm(x))`` or the post-norm variant),
so a mixer only has to mix; it adds no residual of its own.
"""
from __future__ import annotations

import torch
from torch import nn


class TemporalConv(nn.Module):
    """Side4Video's temporal branch: 1×1×1 conv → depthwise 3×1×1 conv over time → 1×1×1 conv.

    No activation in between, biases kept, hidden width = ``dim * ratio`` (the reference uses ratio 1).
    """

    def __init__(self, dim: int, ratio: float = 1.0, kernel_size: int = 3):
        super().__init__()
        hidden = int(dim * ratio)
        self.pw_conv1 = nn.Conv3d(dim, hidden, kernel_size=1)
        self.dw_conv = nn.Conv3d(hidden, hidden, kernel_size=(kernel_size, 1, 1),
                                 padding=(kernel_size // 2, 0, 0), groups=hidden)
        self.pw_conv2 = nn.Conv3d(hidden, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw_conv2(self.dw_conv(self.pw_conv1(x)))

    def init_weights(self, residual_std: float) -> None:
        """Input projection ~ N(0, C^-½); depthwise taps ~ N(0, k^-½); output projection uses the
        depth-aware residual std, so the branch starts small in deep side networks. Biases start at 0."""
        dim = self.pw_conv1.in_channels
        nn.init.normal_(self.pw_conv1.weight, std=dim ** -0.5)
        nn.init.normal_(self.dw_conv.weight, std=self.dw_conv.kernel_size[0] ** -0.5)
        nn.init.normal_(self.pw_conv2.weight, std=residual_std)
        for conv in (self.pw_conv1, self.dw_conv, self.pw_conv2):
            nn.init.zeros_(conv.bias)


def temporal_shift(x: torch.Tensor, fold_div: int = 8, dim: int = 2) -> torch.Tensor:
    """TSM shift along ``dim``: 1/fold_div of the channels from t+1, the next 1/fold_div from t-1, zero-padded.

    ``x`` is channels-first ``(B, C, T, ...)`` with time at ``dim``.
    """
    channels = x.shape[1]
    fold = channels // fold_div
    out = torch.zeros_like(x)
    head, tail = [slice(None)] * x.dim(), [slice(None)] * x.dim()
    # channels [0, fold): frame t takes frame t+1
    head[1], head[dim] = slice(0, fold), slice(None, -1)
    tail[1], tail[dim] = slice(0, fold), slice(1, None)
    out[tuple(head)] = x[tuple(tail)]
    # channels [fold, 2*fold): frame t takes frame t-1
    head[1], head[dim] = slice(fold, 2 * fold), slice(1, None)
    tail[1], tail[dim] = slice(fold, 2 * fold), slice(None, -1)
    out[tuple(head)] = x[tuple(tail)]
    out[:, 2 * fold:] = x[:, 2 * fold:]
    return out


class TemporalShift(nn.Module):
    """TSM (Lin et al., ICCV'19) as a zero-parameter temporal mixer."""

    def __init__(self, dim: int, fold_div: int = 8):
        super().__init__()
        self.fold_div = fold_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.fold_div)

    def init_weights(self, residual_std: float) -> None:
        pass


def create_temporal_mixer(name: str, dim: int) -> nn.Module | None:
    """``'conv'`` (Side4Video), ``'tsm'`` or ``'none'`` (no temporal branch)."""
    if name == "conv":
        return TemporalConv(dim)
    if name == "tsm":
        return TemporalShift(dim)
    if name == "none":
        return None
    raise ValueError(f"unknown temporal module {name!r}; choose conv, tsm or none")


def residual_init_std(dim: int, num_blocks: int) -> float:
    """Std of residual-branch output projections: D^-½ · (2L)^-½ for L side blocks (the reference hard-codes L=12)."""
    return dim ** -0.5 * (2 * max(num_blocks, 1)) ** -0.5 if dim > 0 else 0.0


__all__ = ["TemporalConv", "TemporalShift", "temporal_shift", "create_temporal_mixer", "residual_init_std"]
