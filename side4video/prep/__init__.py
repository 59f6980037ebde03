"""Dataset preparation: official annotation files -> TSN-style train/val lists and a label CSV, and videos ->
resumable frame folders.

Each dataset's list builder is one module here with a :class:`Preparer` subclass registered by
``@PREPARERS.register("<name>")`` (see :mod:`.base`), imported below (one line). The command line is
:mod:`side4video.prep.cli` (``python -m side4video.prep.cli``, later ``side4video prep``).
"""
from __future__ import annotations

from . import hmdb51, kinetics, sthv1, sthv2, ucf101  # noqa: F401  (each registers itself)
from .base import PREPARERS, Preparer
from .resolver import SplitResult

__all__ = ["PREPARERS", "Preparer", "SplitResult"]
