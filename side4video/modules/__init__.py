"""Pluggable side modules: one small file each, registered in ``SIDE_MODULES``.

A side module transforms a side block's patch stream ``[B*T, N, D]`` in one of the block's slots (see
``modules/base.py``). To add one: write ``modules/<name>.py`` with a :class:`SideModule` subclass whose constructor
takes ``dim`` and keyword arguments, decorate it with ``@SIDE_MODULES.register("<name>")``, and import the file
below (one line). From a repository of your own, name the class instead: ``type: my_package.my_module:MyModule``.
It is then usable from a config::

    network:
      side_modules: [{type: <name>, slot: pre_attn, blocks: all, <argument>: <value>}]
"""
from . import gc, h2cn, nonlocal_block, r2plus1d, temporal_conv, tsm  # noqa: F401  (each registers itself)
from .base import SIDE_MODULES, SLOTS, BlockContext, SideModule, TemporalHistory, VideoSideModule, residual_init_std
from .gc import GroupContextualization
from .h2cn import HourglassChannelGate
from .nonlocal_block import NonLocalBlock
from .norm import TokenBatchNorm
from .plan import (
    PROVIDED,
    check_causal_form,
    check_side_module_spec,
    create_side_module,
    module_plan,
    resolve_blocks,
)
from .r2plus1d import R2Plus1DAdapter
from .temporal_conv import TemporalConv
from .tsm import TemporalShift, temporal_shift

__all__ = [
    "SLOTS", "BlockContext", "TemporalHistory", "check_causal_form", "SideModule", "VideoSideModule",
    "residual_init_std", "TokenBatchNorm", "TemporalConv", "TemporalShift", "temporal_shift",
    "GroupContextualization", "HourglassChannelGate", "NonLocalBlock", "R2Plus1DAdapter", "SIDE_MODULES", "PROVIDED",
    "create_side_module", "check_side_module_spec", "module_plan", "resolve_blocks"
]
