"""Exported == eager: the exported graph and the eager module run on the same real inputs and their outputs are
compared (max absolute difference). Above the tolerance the export fails with one line.

* clip: random normalised clips of the model's T frames, at the validation batch and at batch 1 (the batch axis
  is dynamic: both sizes must work);
* stream: ``steps`` random frames pushed one at a time, each graph carrying its own state from the zero initial
  state; every step's scores are compared (the state's difference is recorded too).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .errors import ExportMismatchError
from .exporters import Runner
from .graphs import GraphSpec, random_frames

DEFAULT_TOLERANCE = 1e-4
STREAM_STEPS = 20


@dataclass
class Comparison:
    """How far the exported outputs are from the eager ones."""
    max_difference: float                   # on the logits (clip) / every step's scores (stream)
    inputs: str                             # what was compared, in words
    max_state_difference: float | None = None
    max_abs_output: float = 0.0             # scale of the eager outputs, to read the difference against
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"max_abs_difference": self.max_difference, "inputs": self.inputs,
               "max_abs_eager_output": self.max_abs_output}
        if self.max_state_difference is not None:
            out["max_abs_state_difference"] = self.max_state_difference
        return {**out, **self.details}


def _difference(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    if tuple(a.shape) != tuple(b.shape):
        raise ExportMismatchError(f"the exported graph's {what} has shape {tuple(b.shape)}, the eager model's "
                                  f"{tuple(a.shape)}")
    if not torch.isfinite(b).all():
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def compare_clip(eager: Runner, exported: Runner, spec: GraphSpec, *, batch: int = 2, mean: Sequence[float],
                 std: Sequence[float], seed: int = 0) -> Comparison:
    """Logits of random normalised clips shaped like the example (batch ``batch``, then 1)."""
    generator = torch.Generator().manual_seed(seed)
    shape = tuple(spec.example[0].shape[1:])
    worst, scale, sizes = 0.0, 0.0, sorted({batch, 1}, reverse=True)
    for size in sizes:
        frames = random_frames((size, *shape), mean, std, generator)
        expected, got = eager([frames])[0], exported([frames])[0]
        worst = max(worst, _difference(expected, got, "logits"))
        scale = max(scale, float(expected.abs().max()))
    sizes_text = " and ".join(str(size) for size in sizes)
    return Comparison(worst, f"random normalised clips [B, {', '.join(map(str, shape))}], B = {sizes_text}",
                      max_abs_output=scale)


def compare_stream(eager: Runner, exported: Runner, spec: GraphSpec, *, mean: Sequence[float], std: Sequence[float],
                   steps: int = STREAM_STEPS, seed: int = 0) -> Comparison:
    """``steps`` random frames pushed through both graphs, each carrying its own state; every step compared."""
    generator = torch.Generator().manual_seed(seed)
    frame_shape = tuple(spec.example[0].shape)
    eager_state = [t.clone() for t in spec.initial_state]
    exported_state = [t.clone() for t in spec.initial_state]
    worst, worst_state, scale, worst_step = 0.0, 0.0, 0.0, 0
    for step in range(steps):
        frame = random_frames(frame_shape, mean, std, generator)
        expected = eager([frame, *eager_state])
        got = exported([frame, *exported_state])
        if len(got) != len(expected):
            raise ExportMismatchError(f"the exported stream graph returns {len(got)} tensors, the eager step "
                                      f"{len(expected)}")
        difference = _difference(expected[0], got[0], "scores")
        if difference > worst:
            worst, worst_step = difference, step
        scale = max(scale, float(expected[0].abs().max()))
        for name, a, b in zip(spec.state_names, expected[1:], got[1:]):
            worst_state = max(worst_state, _difference(a, b, f"new_{name}"))
        eager_state, exported_state = list(expected[1:]), list(got[1:])
    return Comparison(worst, f"{steps} random normalised frames [{', '.join(map(str, frame_shape))}] pushed one at a "
                             f"time from the zero state, every step's scores compared",
                      max_state_difference=worst_state, max_abs_output=scale, details={"worst_step": worst_step})


def compare(eager: Runner, exported: Runner, spec: GraphSpec, *, batch: int, mean: Sequence[float],
            std: Sequence[float], steps: int = STREAM_STEPS) -> Comparison:
    """The comparison for ``spec.mode``."""
    if spec.mode == "stream":
        return compare_stream(eager, exported, spec, mean=mean, std=std, steps=steps)
    return compare_clip(eager, exported, spec, batch=batch, mean=mean, std=std)


def check_tolerance(comparison: Comparison, tolerance: float, what: str) -> None:
    """One line (:class:`ExportMismatchError`) when the difference is above ``tolerance`` (or not finite)."""
    difference = comparison.max_difference
    if not difference <= tolerance:
        raise ExportMismatchError(f"{what} differs from the eager model: max |difference| {difference:.3g} > "
                                  f"tolerance {tolerance:.3g} ({comparison.inputs})")


__all__ = ["DEFAULT_TOLERANCE", "STREAM_STEPS", "Comparison", "compare_clip", "compare_stream", "compare",
           "check_tolerance"]
