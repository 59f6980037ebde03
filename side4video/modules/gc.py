"""GC: Group Contextualization (Y. Hao, H. Zhang, C.-W. Ngo, X. He, "Group Contextualization for Video
Recognition", CVPR 2022), as a gating side module on the token grid ``(B, C, T, h, w)``.

    x_g ← x_g ⊙ s·σ(z_g(x_g)),   g ∈ {G, T, S, L} on channel groups of C//4, z_g the group's context, s = gate_scale

The channels are split into four groups of ``Cg = C // 4`` (group 0 → ECal-G, 1 → ECal-T, 2 → ECal-S,
3 → ECal-L; the ``C - 4·Cg`` remaining channels pass through). Each efficient calibrator pools its group along
some axes, computes a context and gates the group with it:

* ECal-G  mean over (T, h, w) → Linear(Cg, Cg) → BN → σ: one gate per (b, c);
* ECal-T  mean over (h, w) → Conv1d over T (k=3) → BN → σ: one gate per (b, c, t);
* ECal-S  mean over T → Conv2d 3×3 (dilation 2) → σ (no BN, as the released code): one gate per (b, c, h, w);
* ECal-L  Conv3d (3, 1, 1) → BN → σ: one gate per element.

``calibrators`` selects a subset (e.g. ``"T"`` or ``"L"`` for the single-calibrator rows of the GC tables; letters
in any order, each calibrator always gates its own group); the groups of the calibrators left out pass through
unchanged and the group size stays C // 4.

Design decision of this toolkit: in a ResNet bottleneck GC gates the 3×3 features inside the residual branch,
whereas here the gates act directly on the side block's residual stream. A plain sigmoid (≤ 1, ½ for a neutral
context) would then halve the stream of every gated group in every block, so the gate is scaled:
``s·σ(z)`` with ``gate_scale`` s = 2 by default, so that a neutral context z = 0 leaves the stream unchanged and a
gate can amplify as well as suppress. ``gate_scale = 1`` is the papers' plain sigmoid.

ECal-G's BatchNorm normalises over the batch of pooled clip vectors, so training needs at least 2 clips in the
(global, with ``sync_bn``) batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from .base import SIDE_MODULES, BlockContext, VideoSideModule
from .norm import TokenBatchNorm

CALIBRATORS = "GTSL"   # calibrator letter → its channel group: its position in this string


def _norm_channels_first(norm: TokenBatchNorm, v: torch.Tensor) -> torch.Tensor:
    """TokenBatchNorm (channel-last, sync-capable) on a channel-first tensor ``(B, C, ...)``."""
    return norm(v.movedim(1, -1)).movedim(-1, 1)


@SIDE_MODULES.register("gc")
class GroupContextualization(VideoSideModule):
    """GC's four efficient calibrators (ECal-G/T/S/L) on C/4 channel groups, gates scaled by ``gate_scale``."""

    causal = False
    default_slot = "pre_attn"
    default_blocks = "all"

    def __init__(self, dim: int, *, calibrators: str = "GTSL", gate_scale: float = 2.0, sync_bn: bool = False):
        super().__init__()
        if not isinstance(calibrators, str) or not calibrators or any(c not in CALIBRATORS for c in calibrators) \
                or len(set(calibrators)) != len(calibrators):
            raise ConfigError(f"GC calibrators must be a non-empty subset of the letters {CALIBRATORS!r} without "
                             f"repeats, got {calibrators!r}")
        if isinstance(gate_scale, bool) or not isinstance(gate_scale, (int, float)) or not math.isfinite(gate_scale) \
                or gate_scale <= 0:
            raise ConfigError(f"GC gate_scale must be a positive number, got {gate_scale!r}")
        if dim < len(CALIBRATORS):
            raise ConfigError(f"GC needs at least {len(CALIBRATORS)} channels (4 groups of C // 4), got dim={dim}")
        cg = dim // len(CALIBRATORS)
        self.dim = dim
        self.group = cg
        self.calibrators = "".join(c for c in CALIBRATORS if c in calibrators)   # canonical order
        self.gate_scale = float(gate_scale)
        if "G" in self.calibrators:
            self.g_fc = nn.Linear(cg, cg, bias=False)
            self.g_norm = TokenBatchNorm(cg, sync=sync_bn)
        if "T" in self.calibrators:
            self.t_conv = nn.Conv1d(cg, cg, kernel_size=3, padding=1, bias=False)
            self.t_norm = TokenBatchNorm(cg, sync=sync_bn)
        if "S" in self.calibrators:
            self.s_conv = nn.Conv2d(cg, cg, kernel_size=3, padding=2, dilation=2, bias=False)
        if "L" in self.calibrators:
            self.l_conv = nn.Conv3d(cg, cg, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False)
            self.l_norm = TokenBatchNorm(cg, sync=sync_bn)

    # Contexts z_g (pre-sigmoid), each shaped to broadcast against its group (B, Cg, T, h, w).
    def _context_g(self, x: torch.Tensor) -> torch.Tensor:
        z = self.g_norm(self.g_fc(x.mean(dim=(2, 3, 4))))                 # (B, Cg)
        return z[:, :, None, None, None]

    def _context_t(self, x: torch.Tensor) -> torch.Tensor:
        z = _norm_channels_first(self.t_norm, self.t_conv(x.mean(dim=(3, 4))))   # (B, Cg, T)
        return z[:, :, :, None, None]

    def _context_s(self, x: torch.Tensor) -> torch.Tensor:
        return self.s_conv(x.mean(dim=2)).unsqueeze(2)                     # (B, Cg, 1, h, w)

    def _context_l(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_channels_first(self.l_norm, self.l_conv(x))          # (B, Cg, T, h, w)

    def gate(self, letter: str, x: torch.Tensor) -> torch.Tensor:
        """The scaled gate ``s·σ(z)`` of calibrator ``letter`` for its group ``x (B, Cg, T, h, w)``."""
        context = {"G": self._context_g, "T": self._context_t, "S": self._context_s, "L": self._context_l}[letter]
        return self.gate_scale * torch.sigmoid(context(x))

    def group_slice(self, letter: str) -> slice:
        """The channels that calibrator ``letter`` gates."""
        index = CALIBRATORS.index(letter)
        return slice(index * self.group, (index + 1) * self.group)

    def forward_video(self, v: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        pieces = []
        for letter in CALIBRATORS:
            x_g = v[:, self.group_slice(letter)]
            pieces.append(x_g * self.gate(letter, x_g) if letter in self.calibrators else x_g)
        pieces.append(v[:, len(CALIBRATORS) * self.group:])              # channels beyond 4·Cg pass through
        return torch.cat(pieces, dim=1)

    def init_weights(self, depth: int) -> None:
        """As the released code: ECal-G's Linear ~ N(0, 0.001), convolutions Xavier-normal, BN γ = 1, β = 0."""
        if "G" in self.calibrators:
            nn.init.normal_(self.g_fc.weight, std=0.001)
        for name in ("t_conv", "s_conv", "l_conv"):
            if hasattr(self, name):
                nn.init.xavier_normal_(getattr(self, name).weight)
        for name in ("g_norm", "t_norm", "l_norm"):
            if hasattr(self, name):
                nn.init.ones_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, group={self.group}, calibrators={self.calibrators!r}, gate_scale={self.gate_scale}"


__all__ = ["GroupContextualization", "CALIBRATORS"]
