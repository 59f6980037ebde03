"""Writing a :class:`~side4video.export.graphs.GraphSpec` as ONNX or as a ``torch.export`` program, and running
what was written.

* ONNX: ``torch.onnx.export(dynamo=True)`` first (the ``torch.export``-based exporter); if it fails, the
  TorchScript exporter (``dynamo=False``). Which one wrote the file is returned (model.json records it). The file
  is run with an onnxruntime CPU session.
* pt2: ``torch.export.export`` + ``torch.export.save``; run with ``torch.export.load(path).module()``.

``onnx``/``onnxruntime`` (and ``onnxscript``, which the dynamo exporter needs) are the optional extra
``side4video[export]``: without them ONNX export is a one-line :class:`MissingExportDependency`.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from .errors import ExportError, MissingExportDependency
from .graphs import GraphSpec

FORMATS = ("onnx", "pt2")
FILE_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2"}
DEFAULT_OPSET = 18
# above this many bytes of weights the ONNX file keeps them in a side file (protobuf's 2 GiB limit)
EXTERNAL_DATA_BYTES = 1536 * 1024 ** 2
INSTALL_HINT = "pip install 'side4video[export]'"

Runner = Callable[[Sequence[torch.Tensor]], tuple[torch.Tensor, ...]]


def require_onnx() -> None:
    """One line naming the extra to install when ``onnx``/``onnxruntime``/``onnxscript`` are missing."""
    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            __import__(name)  # deferred: optional dependency
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExportDependency(f"--format onnx needs {', '.join(missing)}, which are not installed: "
                                      f"{INSTALL_HINT}")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters' progress lines, warnings and constant-folding notes off the console (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _weight_bytes(module: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def export_pt2(spec: GraphSpec, path: str | Path) -> dict[str, Any]:
    """``torch.export.export`` + ``torch.export.save`` to ``path``; returns what model.json records."""
    try:
        with torch.no_grad(), quiet_exporter():
            program = torch.export.export(spec.module, spec.example, dynamic_shapes=spec.torch_dynamic_shapes())
            torch.export.save(program, str(path))
    except Exception as exc:  # the tracer's errors are many types; the user gets the first line
        raise ExportError(f"torch.export could not export the {spec.mode} graph: {_first_line(exc)}") from exc
    return {"exporter": "torch.export", "files": [Path(path).name]}


def export_onnx(spec: GraphSpec, path: str | Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """ONNX through the dynamo exporter, else the TorchScript one; returns what model.json records (the exporter
    used, the opset, the files written, and why the dynamo exporter was not used if it was not)."""
    require_onnx()
    path = Path(path)
    external = _weight_bytes(spec.module) > EXTERNAL_DATA_BYTES
    info: dict[str, Any] = {}
    try:
        with torch.no_grad(), quiet_exporter():
            torch.onnx.export(spec.module, spec.example, str(path), dynamo=True, input_names=spec.input_names,
                              output_names=spec.output_names, opset_version=opset, external_data=external,
                              dynamic_shapes=spec.torch_dynamic_shapes(), verbose=False)
        info["exporter"] = "dynamo"
    except Exception as exc:  # fall back: the TorchScript exporter handles other ops
        info["dynamo_error"] = _first_line(exc)
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        try:
            with torch.no_grad(), quiet_exporter():
                torch.onnx.export(spec.module, spec.example, str(path), dynamo=False, input_names=spec.input_names,
                                  output_names=spec.output_names, opset_version=opset,
                                  dynamic_axes=spec.dynamic_axes or None)
        except Exception as fallback_exc:
            raise ExportError(f"ONNX export of the {spec.mode} graph failed with both exporters: dynamo: "
                              f"{info['dynamo_error']}; torchscript: {_first_line(fallback_exc)}") from fallback_exc
        info["exporter"] = "torchscript"
    info["opset"] = onnx_opset(path)
    info["files"] = sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))
    return info


def onnx_opset(path: str | Path) -> int | None:
    """The default-domain opset an ONNX file declares."""
    import onnx  # deferred: optional dependency
    model = onnx.load(str(path), load_external_data=False)
    return next((int(entry.version) for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def export_graph(spec: GraphSpec, fmt: str, path: str | Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write ``spec`` in ``fmt`` (``onnx`` | ``pt2``) to ``path``."""
    if fmt == "onnx":
        return export_onnx(spec, path, opset)
    if fmt == "pt2":
        return export_pt2(spec, path)
    raise ValueError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")


def onnx_runner(path: str | Path, threads: int | None = None) -> Runner:
    """An onnxruntime CPU session on ``path`` as ``runner(inputs) -> outputs`` (torch tensors, in graph order)."""
    import onnxruntime as ort  # deferred: optional dependency
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are its own types
        raise ExportError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from exc
    names = [node.name for node in session.get_inputs()]

    def run(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        feed = {name: tensor.detach().cpu().numpy() for name, tensor in zip(names, inputs)}
        return tuple(torch.from_numpy(out) for out in session.run(None, feed))
    return run


def pt2_runner(path: str | Path) -> Runner:
    """The saved program's ``.module()`` as ``runner(inputs) -> outputs``."""
    try:
        module = torch.export.load(str(path)).module()
    except Exception as exc:  # a file torch.export cannot read
        raise ExportError(f"torch.export.load cannot load {path}: {_first_line(exc)}") from exc

    def run(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            out = module(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return run


def load_runner(fmt: str, path: str | Path, threads: int | None = None) -> Runner:
    """Run an exported file (``onnx``: onnxruntime CPU; ``pt2``: the loaded program's module)."""
    return onnx_runner(path, threads) if fmt == "onnx" else pt2_runner(path)


def eager_runner(module: torch.nn.Module) -> Runner:
    """The eager module behind the same calling convention as the exported files."""
    def run(inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            out = module(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)
    return run


__all__ = ["FORMATS", "FILE_NAMES", "DEFAULT_OPSET", "INSTALL_HINT", "Runner", "require_onnx", "export_pt2",
           "export_onnx", "export_graph", "onnx_opset", "onnx_runner", "pt2_runner", "load_runner", "eager_runner"]
