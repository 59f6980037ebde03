"""Errors of the export (one line each on the command line: they are :class:`~side4video.errors.Side4VideoError`)."""
from __future__ import annotations

from ..errors import Side4VideoError


class ExportError(Side4VideoError, RuntimeError):
    """A model that cannot be exported, or whose exported graph does not run."""


class MissingExportDependency(ExportError, ImportError):
    """``--format onnx`` without the optional ``onnx``/``onnxruntime`` packages."""


class ExportMismatchError(ExportError):
    """The exported graph's outputs differ from the eager model's by more than the tolerance."""


__all__ = ["ExportError", "MissingExportDependency", "ExportMismatchError"]
