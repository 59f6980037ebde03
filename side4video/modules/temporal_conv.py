"""Side4Video's temporal branch (Yao et al., "Side4Video", arXiv 2311.15769), the side network's default module.

    pre-norm (CLIP):  x + PW₂(DW_{3×1×1}(PW₁(BN(x))))        post-norm (EVA):  x + BN(PW₂(DW_{3×1×1}(PW₁(x))))

No activation between the convolutions, biases kept, hidden width ``ratio · D`` (the reference uses 1). Causal
(``network.causal``): the same taps cover frames t-k+1..t instead of t-k//2..t+k//2. The
parameters have the reference's Conv3d shapes; the maths runs on channel-last tokens (1×1×1 convolutions are
linear layers over channels, the depthwise temporal convolution a weighted sum of neighbouring frames), so no
``(B, D, T, h, w)`` permutes are made.
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ..errors import ConfigError
from ..registry import Range
from .base import SIDE_MODULES, BlockContext, SideModule, residual_init_std
from .functional import recomputed_linear, temporal_depthwise
from .norm import TokenBatchNorm


@SIDE_MODULES.register("conv")
class TemporalConv(SideModule):
    """The Side4Video temporal convolution branch, with its own BatchNorm and residual."""

    has_causal_form = True

    def __init__(self, dim: int, *, ratio: float = 1.0, kernel_size: Annotated[int, Range(1)] = 3,
                 post_norm: bool = False, sync_bn: bool = False, drop_path: float = 0.0, recompute: bool = False,
                 causal: bool = False):
        super().__init__()
        self.causal = causal
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"temporal conv kernel_size must be odd and positive, got {kernel_size}")
        hidden = int(dim * ratio)
        self.post_norm = post_norm
        self.recompute = recompute
        self.norm = TokenBatchNorm(dim, sync=sync_bn)
        self.pw_conv1 = nn.Conv3d(dim, hidden, kernel_size=1)
        self.dw_conv = nn.Conv3d(hidden, hidden, kernel_size=(kernel_size, 1, 1), padding=(kernel_size // 2, 0, 0),
                                 groups=hidden)
        self.pw_conv2 = nn.Conv3d(hidden, dim, kernel_size=1)
        self.drop_path = DropPath(drop_path)

    def _branch(self, x: torch.Tensor, num_frames: int, extend=None) -> torch.Tensor:
        w1 = self.pw_conv1.weight.flatten(1)
        w2 = self.pw_conv2.weight.flatten(1)
        dw_weight, dw_bias = self.dw_conv.weight.flatten(1), self.dw_conv.bias
        causal = self.causal

        def depthwise(h, weight=dw_weight, bias=dw_bias):
            return temporal_depthwise(h, weight, bias, num_frames, causal=causal, extend=extend)

        b1, b2, norm = self.pw_conv1.bias, self.pw_conv2.bias, self.norm
        if self.recompute and not self.post_norm and not norm.synchronised:
            # BN → PW₁ → DW recomputed in backward as one region: only the branch input x is kept (the stream,
            # kept anyway), not the normalised, projected and convolved D-wide tensors (+1 D×D matmul in backward)
            def region(x, nw, nb, pw, pb, dw, db):
                return temporal_depthwise(F.linear(norm.pure(x, nw, nb), pw, pb), dw, db, num_frames, causal=causal)
            return recomputed_linear(x, w2, b2, lambda x: depthwise(F.linear(norm(x), w1, b1)), region,
                                     (norm.weight, norm.bias, w1, b1, dw_weight, dw_bias))
        h = F.linear(x if self.post_norm else norm(x), w1, b1)
        if self.recompute:
            out = recomputed_linear(h, w2, b2, depthwise, depthwise, (dw_weight, dw_bias))
        else:
            out = F.linear(depthwise(h), w2, b2)
        return norm(out) if self.post_norm else out

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        extend = None
        if self.causal and ctx.history is not None:     # streaming: the past frames come from the history
            def extend(seq, keep):
                return ctx.past_and_present("dw", seq, keep)
        return x + self.drop_path(self._branch(x, ctx.num_frames, extend))

    def init_weights(self, depth: int) -> None:
        """Input projection ~ N(0, C^-½); depthwise taps ~ N(0, k^-½); output projection with the depth-aware
        residual std, so the branch starts small in deep side networks; biases 0, BatchNorm weight 1, bias 0.
        (The reference's init loop names layers its block does not have, so there they keep PyTorch's default.)"""
        dim = self.pw_conv1.in_channels
        nn.init.normal_(self.pw_conv1.weight, std=dim ** -0.5)
        nn.init.normal_(self.dw_conv.weight, std=self.dw_conv.kernel_size[0] ** -0.5)
        nn.init.normal_(self.pw_conv2.weight, std=residual_init_std(dim, depth))
        for conv in (self.pw_conv1, self.dw_conv, self.pw_conv2):
            nn.init.zeros_(conv.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)


__all__ = ["TemporalConv"]
