"""Pluggable side modules. Temporal mixers: ``(B, C, T, h, w) → same shape``."""
from .norm import TokenBatchNorm
from .temporal import TemporalConv, TemporalShift, create_temporal_mixer, residual_init_std, temporal_shift

__all__ = ["TokenBatchNorm", "TemporalConv", "TemporalShift", "create_temporal_mixer", "residual_init_std", "temporal_shift"]
