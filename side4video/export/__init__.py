"""Deployment export: a trained checkpoint as one ONNX or ``torch.export`` (pt2) graph, checked against eager.

``side4video export --weights CKPT --format onnx|pt2 --mode clip|stream --out DIR`` (``side4video.tools.export``)
calls :func:`export_checkpoint`; :mod:`.graphs` holds the exported modules, :mod:`.exporters` the two formats,
:mod:`.validate` the exported == eager comparison.
"""
from __future__ import annotations

from .api import MODES, ExportResult, export_checkpoint, write_and_validate
from .errors import ExportError, ExportMismatchError, MissingExportDependency
from .exporters import DEFAULT_OPSET, FORMATS, INSTALL_HINT, load_runner
from .graphs import ClipGraph, GraphSpec, clip_spec, stream_spec, stream_spec_for_step
from .validate import DEFAULT_TOLERANCE, STREAM_STEPS

__all__ = ["MODES", "FORMATS", "DEFAULT_OPSET", "DEFAULT_TOLERANCE", "STREAM_STEPS", "INSTALL_HINT", "ExportResult",
           "export_checkpoint", "write_and_validate", "load_runner", "ClipGraph", "GraphSpec", "clip_spec",
           "stream_spec", "stream_spec_for_step", "ExportError", "ExportMismatchError", "MissingExportDependency"]
