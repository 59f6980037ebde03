"""The modules that become exported graphs, and what a graph takes and returns.

* clip: :class:`ClipGraph` — frames ``[B, T, 3, H, W]`` (float, normalised as the test path) → logits ``[B, C]``:
  the frozen backbone, the side network (or baseline head) and its classifier in one graph, through
  :func:`~side4video.models.assembly.run_model`, exactly the eager path; the batch axis is dynamic.
* stream: the :class:`~side4video.streaming.step.StreamStep` itself — one frame ``[1, 3, H, W]`` and the state
  tensors → scores ``[1, C]`` and the new state, in ``state_names`` order.

A :class:`GraphSpec` carries the module with its example inputs, input/output names and dynamic axes; the
exporters and the validation only ever see specs, so they work for any module of that shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..backbones.frozen import FrozenEncoder
from ..data.transforms import normalize_frames
from ..errors import ConfigError
from ..models.assembly import run_model
from ..streaming.step import create_stream_step

CLIP_INPUT = "frames"
CLIP_OUTPUT = "logits"
STREAM_INPUT = "frame"
STREAM_OUTPUT = "scores"
BATCH_AXIS = "batch"
# the example batch the clip graph is traced with: 1 would make the tracer specialise the batch axis to 1
TRACE_BATCH = 2
MAX_BATCH = 4096


class ClipGraph(nn.Module):
    """Frozen backbone + trainable model as one module: ``frames`` ``[B, T, 3, H, W]`` → logits ``[B, C]``."""

    def __init__(self, backbone: FrozenEncoder, model: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return run_model(self.backbone, self.model, frames)


@dataclass
class GraphSpec:
    """A module to export and how it is called.

    ``example`` are the trace inputs (positional, in ``input_names`` order); ``dynamic_axes`` maps an input or
    output name to ``{axis: name}`` (the clip graph's batch axis); ``state_names`` / ``initial_state`` are set for
    stream graphs, whose inputs are ``frame`` then one tensor per state name and whose outputs are ``scores``
    then ``new_<name>`` per state name."""
    mode: str
    module: nn.Module
    example: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    state_names: list[str] = field(default_factory=list)
    initial_state: list[torch.Tensor] = field(default_factory=list)

    def torch_dynamic_shapes(self) -> tuple[Any, ...] | None:
        """``dynamic_shapes`` for ``torch.export.export`` (positional, one entry per input), None if all static."""
        if not self.dynamic_axes:
            return None
        dims: dict[str, torch.export.Dim] = {}
        shapes = []
        for name in self.input_names:
            axes = self.dynamic_axes.get(name)
            if not axes:
                shapes.append(None)
                continue
            shapes.append({axis: dims.setdefault(label, torch.export.Dim(label, min=1, max=MAX_BATCH))
                           for axis, label in axes.items()})
        return tuple(shapes)

    def describe(self, tensors: tuple[torch.Tensor, ...], names: list[str]) -> list[dict[str, Any]]:
        """``[{name, shape, dtype}]`` with dynamic axes named, for model.json."""
        described = []
        for name, tensor in zip(names, tensors):
            shape: list[Any] = list(tensor.shape)
            for axis, label in self.dynamic_axes.get(name, {}).items():
                shape[axis] = label
            described.append({"name": name, "shape": shape, "dtype": str(tensor.dtype).replace("torch.", "")})
        return described


def frames_per_window(cfg, frames: int | None = None) -> int:
    """The frames one clip holds: ``frames`` if given, else ``data.num_segments × data.seg_length`` (test.py's T)."""
    if frames is not None:
        return int(frames)
    return int(cfg.data.num_segments) * int(cfg.data.seg_length)


def random_frames(shape: tuple[int, ...], mean, std, generator: torch.Generator) -> torch.Tensor:
    """Random uint8 pixels ``shape`` (``[..., 3, H, W]``), normalised exactly as the test path does."""
    pixels = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return normalize_frames(pixels, mean, std)


def check_exportable(cfg) -> None:
    """Refuse what the clip graph cannot hold: an assembler other than the default tap (full-video clustering
    turns more frames than T into the model's inputs, with data-dependent steps)."""
    assembler = cfg.network.assembler
    name = assembler.get("type") if hasattr(assembler, "get") else assembler
    if assembler and name != "tap":
        raise ConfigError(f"network.assembler: {name} cannot be exported (only the default tap assembler: frames "
                          f"[B, T, 3, H, W] → logits); export a model trained without it")


def clip_spec(cfg, backbone: FrozenEncoder, model: nn.Module, frames: int | None = None) -> GraphSpec:
    """The clip graph of a loaded model, with an example input of ``TRACE_BATCH`` random clips."""
    check_exportable(cfg)
    size = int(cfg.data.input_size)
    example = random_frames((TRACE_BATCH, frames_per_window(cfg, frames), 3, size, size), cfg.data.mean,
                            cfg.data.std, torch.Generator().manual_seed(1))
    graph = ClipGraph(backbone, model).eval().requires_grad_(False)
    return GraphSpec("clip", graph, (example,), [CLIP_INPUT], [CLIP_OUTPUT],
                     dynamic_axes={CLIP_INPUT: {0: BATCH_AXIS}, CLIP_OUTPUT: {0: BATCH_AXIS}})


def stream_spec_for_step(step: nn.Module, input_size: int) -> GraphSpec:
    """The stream graph of a StreamStep-shaped module (``state_names``, ``initial_state()``,
    ``forward(frame, *state) -> (scores, *new_state)``)."""
    names = list(step.state_names)
    state = [tensor.detach().clone() for tensor in step.initial_state()]
    if len(state) != len(names):
        raise ValueError(f"the stream step names {len(names)} state tensors but its initial state has {len(state)}")
    frame = torch.zeros(1, 3, input_size, input_size)
    return GraphSpec("stream", step.eval().requires_grad_(False), (frame, *state), [STREAM_INPUT, *names],
                     [STREAM_OUTPUT, *(f"new_{name}" for name in names)], state_names=names, initial_state=state)


def stream_spec(cfg, backbone: FrozenEncoder, model: nn.Module, frames: int | None = None) -> GraphSpec:
    """The stream graph of a loaded (causal) model: ``side4video.streaming.step.create_stream_step`` (its window:
    ``frames``, else the model's T)."""
    check_exportable(cfg)
    step = create_stream_step(cfg, backbone, model, window=frames_per_window(cfg, frames))
    return stream_spec_for_step(step, int(cfg.data.input_size))


__all__ = ["ClipGraph", "GraphSpec", "clip_spec", "stream_spec", "stream_spec_for_step", "frames_per_window",
           "random_frames", "check_exportable", "TRACE_BATCH"]
