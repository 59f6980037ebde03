"""Pluggable side modules: one small file each, one line each in ``SIDE_MODULES``.

A side module transforms a side block's patch stream ``[B*T, N, D]`` in one of the block's slots (see
``modules/base.py``). To add one: write ``modules/<name>.py`` with a :class:`SideModule` subclass whose
constructor takes ``dim`` and keyword arguments, and add a line below. It is then usable from a config::

    network:
      side_modules: [{type: <name>, slot: pre_attn, blocks: all, <argument>: <value>}]
"""
from .base import SLOTS, BlockContext, SideModule, VideoSideModule, residual_init_std
from .gc import GroupContextualization
from .h2cn import HourglassChannelGate
from .nonlocal_block import NonLocalBlock
from .norm import TokenBatchNorm
from .r2plus1d import R2Plus1DAdapter
from .temporal_conv import TemporalConv
from .tsm import TemporalShift, temporal_shift

SIDE_MODULES: dict[str, type[SideModule]] = {
    "conv": TemporalConv,          # Side4Video temporal convolution (the default)
    "tsm": TemporalShift,          # TSM, bi-directional or online
    "gc": GroupContextualization,  # GC: ECal-G/T/S/L gates on C/4 channel groups
    "h2cn": HourglassChannelGate,  # H2CN's CHGC: hourglass per-frame channel gate
    "nonlocal": NonLocalBlock,     # embedded-Gaussian space-time non-local block
    "r2plus1d": R2Plus1DAdapter,   # (2+1)D conv adapter, parameter-matched
}

from .registry import build_side_module, check_side_module_spec, module_plan, resolve_blocks  # noqa: E402

__all__ = ["SLOTS", "BlockContext", "SideModule", "VideoSideModule", "residual_init_std", "TokenBatchNorm",
           "TemporalConv", "TemporalShift", "temporal_shift", "SIDE_MODULES", "build_side_module",
           "check_side_module_spec", "module_plan", "resolve_blocks"]
