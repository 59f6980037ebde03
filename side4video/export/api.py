"""Export a checkpoint: load it (fp32, CPU), build the clip or stream graph, write it, run it against the eager
model, and only then put ``model.onnx`` / ``model.pt2`` and ``model.json`` into the output folder.

The files are written into a staging folder inside ``out`` first; an export that fails (exporter error, outputs
above the tolerance) leaves ``out`` as it was.
"""
from __future__ import annotations

import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..data.lists import read_label_names
from ..data.transforms import resolve_scale_size
from ..engine.builders import config_for_checkpoint, load_for_inference
from ..errors import Side4VideoError
from ..files import atomic_write_json
from ..tasks import require_classification
from .exporters import DEFAULT_OPSET, FILE_NAMES, FORMATS, eager_runner, export_graph, load_runner, require_onnx
from .graphs import GraphSpec, clip_spec, frames_per_window, stream_spec
from .validate import DEFAULT_TOLERANCE, STREAM_STEPS, Comparison, check_tolerance, compare

MODES = ("clip", "stream")
# what export forces whatever the checkpoint was trained with: fp32 on the CPU
FP32_OPTS = ["network.backbone_precision=fp32", "solver.precision=fp32"]


@dataclass
class ExportResult:
    """What an export wrote and measured."""
    path: Path                  # model.onnx / model.pt2
    metadata_path: Path         # model.json
    metadata: dict[str, Any]
    comparison: Comparison

    @property
    def max_difference(self) -> float:
        return self.comparison.max_difference


def write_and_validate(spec: GraphSpec, fmt: str, out: str | Path, *, tolerance: float = DEFAULT_TOLERANCE,
                       batch: int = 2, mean: Sequence[float], std: Sequence[float], opset: int = DEFAULT_OPSET,
                       steps: int = STREAM_STEPS, metadata: dict[str, Any] | None = None,
                       threads: int | None = None) -> ExportResult:
    """Export ``spec`` as ``fmt`` into ``out``, compare it with the eager module, and move the files into place
    (with ``model.json``: ``metadata`` plus what the export measured) only when the difference is within
    ``tolerance``; otherwise :class:`~side4video.export.errors.ExportMismatchError` and ``out`` is left as it was
    (not created if it did not exist)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "onnx":
        require_onnx()
    out = Path(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    done = False
    try:
        staged = stage / FILE_NAMES[fmt]
        info = export_graph(spec, fmt, staged, opset)
        comparison = compare(eager_runner(spec.module), load_runner(fmt, staged, threads), spec, batch=batch,
                             mean=mean, std=std, steps=steps)
        check_tolerance(comparison, tolerance, f"the exported {spec.mode} graph ({fmt}, {info['exporter']} exporter)")
        record = {**(metadata or {}), **graph_metadata(spec, fmt, info),
                  "validation": {**comparison.as_dict(), "tolerance": tolerance}}
        stale = out / f"{FILE_NAMES[fmt]}.data"      # the weights file of an earlier, larger ONNX export
        if stale.name not in info["files"]:
            stale.unlink(missing_ok=True)
        for name in info["files"]:
            (stage / name).replace(out / name)
        atomic_write_json(out / "model.json", record)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not done and not any(out.iterdir()):
            out.rmdir()
    return ExportResult(out / FILE_NAMES[fmt], out / "model.json", record, comparison)


def graph_metadata(spec: GraphSpec, fmt: str, info: dict[str, Any]) -> dict[str, Any]:
    """The graph's interface and how it was written, for model.json."""
    with torch.no_grad():
        outputs = eager_runner(spec.module)(spec.example)
    record: dict[str, Any] = {
        "format": fmt, "mode": spec.mode, "file": FILE_NAMES[fmt], "files": info["files"],
        "exporter": info["exporter"], "opset": info.get("opset"),
        "inputs": spec.describe(spec.example, spec.input_names),
        "outputs": spec.describe(outputs, spec.output_names),
        "versions": _versions(fmt), "precision": "fp32", "device": "cpu"}
    if "dynamo_error" in info:
        record["dynamo_error"] = info["dynamo_error"]
    if fmt == "pt2":
        record["load"] = "torch.export.load(path).module()(*inputs), inputs positional in 'inputs' order"
    if spec.mode == "stream":
        record["state"] = {
            "names": spec.state_names,
            "tensors": spec.describe(tuple(spec.initial_state), spec.state_names),
            "initial": "zeros", "reset": "zeros (a new stream starts from the initial state)",
            "usage": "scores, *state = graph(frame, *state): feed each new_<name> back as <name> for the next frame"}
        record["initial_state_all_zero"] = all(not bool(t.any()) for t in spec.initial_state)
    return record


def _versions(fmt: str) -> dict[str, str]:
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    if fmt == "onnx":
        import onnx  # deferred: optional dependency
        import onnxruntime  # deferred: optional dependency
        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    return versions


def model_metadata(cfg, weights: str | Path, frames: int) -> dict[str, Any]:
    """What a deployment needs to feed the graph: input size, normalisation, T, classes."""
    data, net = cfg.data, cfg.network
    return {
        "checkpoint": str(weights), "arch": str(net.arch), "head": str(net.head),
        "causal": bool(net.get("causal", False)),
        "input_size": int(data.input_size), "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std],
        "input_format": "RGB float32 (pixels / 255 - mean) / std, channels first",
        "preprocess": "the test path's centre view: resize to scale_size (an int: the short side; [H, W]), centre "
                      "crop input_size x input_size",
        "scale_size": _scale_size(cfg),
        "frames_per_window": frames, "num_classes": int(data.num_classes), "class_names": _class_names(cfg)}


def _scale_size(cfg) -> int | list[int]:
    scale = resolve_scale_size(cfg.data.scale_size, int(cfg.data.input_size), str(cfg.data.dataset or ""))
    return scale if isinstance(scale, int) else list(scale)


def _class_names(cfg) -> list[str] | None:
    label_list = cfg.data.label_list
    if not label_list:
        return None
    try:
        names = read_label_names(str(label_list))
    except (Side4VideoError, OSError):
        return None     # the label list of the training machine: the class ids still are the classes' order
    return names if len(names) == int(cfg.data.num_classes) else None


def export_checkpoint(weights: str | Path, out: str | Path, *, fmt: str, mode: str = "clip",
                      config: str | Path | None = None, opts: Sequence[str] = (), frames: int | None = None,
                      batch: int = 2, tolerance: float = DEFAULT_TOLERANCE, opset: int = DEFAULT_OPSET,
                      log: Callable[[str], None] | None = None) -> ExportResult:
    """``side4video export``: a checkpoint → ``out/model.{onnx,pt2}`` + ``out/model.json``, validated."""
    if mode not in MODES:
        raise ValueError(f"unknown export mode {mode!r} (choose from {', '.join(MODES)})")
    if fmt == "onnx":
        require_onnx()      # before the minutes of loading and tracing
    # the graphs are a recognition model's (clip → logits, frame + state → scores): refuse other tasks before the
    # backbone is built
    require_classification(config_for_checkpoint(weights, config, [*opts, *FP32_OPTS]), "side4video export",
                           "a retrieval checkpoint's video and caption embeddings are written by side4video "
                           "extract-retrieval")
    cfg, backbone, model = load_for_inference(weights, config, [*opts, *FP32_OPTS], device="cpu")
    model.float()
    window = frames_per_window(cfg, frames)
    if log:
        log(f"exporting the {mode} graph of {weights} ({cfg.network.arch}, {window} frames of "
            f"{int(cfg.data.input_size)} px) as {fmt}")
    spec = clip_spec(cfg, backbone, model, frames) if mode == "clip" else stream_spec(cfg, backbone, model, frames)
    return write_and_validate(spec, fmt, out, tolerance=tolerance, batch=batch, mean=cfg.data.mean,
                              std=cfg.data.std, opset=opset, metadata=model_metadata(cfg, weights, window))


__all__ = ["MODES", "ExportResult", "write_and_validate", "graph_metadata", "model_metadata", "export_checkpoint"]
