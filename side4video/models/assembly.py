"""Clip assemblers: how a batch of frames becomes :class:`SideInputs`, and the one "tap, then run the model" path.

An assembler is called as ``assembler(backbone, frames, layers=..., embedding=..., mask=None)`` and returns
``SideInputs``. The default taps the frozen backbone on the sampled frames. Others (``network.assembler``,
e.g. full-video clustering) may ask the data pipeline for more frames than the model sees
(``frames_per_video``) and turn them into the model's T (pseudo-)frames.

:func:`run_model` is what training, evaluation, prediction and the benchmarks call.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from ..backbones.frozen import FrozenEncoder
from ..registry import Registry
from .inputs import SideInputs

# name → clip assembler class (``network.assembler: {type: NAME, ...}``)
ASSEMBLERS: Registry = Registry("clip assembler")


def protocol_name(frames: int, crops: int, clips: int) -> str:
    """frames × crops × clips, the notation of Side4Video/UniFormerV2 tables (e.g. ``8x3x2``)."""
    return f"{frames}x{crops}x{clips}"


@ASSEMBLERS.register("tap")
class TapAssembler:
    """The default: the frozen backbone runs once on the sampled frames; the model's layers are tapped.

    An assembler also says what the data pipeline must deliver: ``frame_sampler(data_cfg)`` (None: the
    config's own frame sampler) and ``collate_fn(train)`` (None: the usual fixed-length collation).
    """

    name = "tap"

    def frame_sampler(self, data_cfg):
        return None

    def test_protocol(self, data_cfg, crops: int, clips: int) -> tuple[int, str]:
        """The frames the model sees per view and the protocol's name (``8x3x2``: frames × crops × clips)."""
        frames = int(data_cfg.num_segments) * int(data_cfg.seg_length)
        return frames, protocol_name(frames, crops, clips)

    def collate_fn(self, train: bool):
        return None

    def __call__(self, backbone: FrozenEncoder, frames: torch.Tensor, *, layers: list[int], embedding: bool,
                 mask: torch.Tensor | None = None) -> SideInputs:
        taps = backbone.tap(frames, layers=layers, embedding=embedding)
        return SideInputs(frames, taps.cls_tokens, taps.patch_tokens, taps.layers, taps.embedding, frames.shape[1])

    def state_dict(self) -> dict:
        return {}


def check_assembler_spec(entry: dict) -> dict:
    """``{type: NAME, ...}`` → checked (closest-name hints for the type and its arguments, argument values)."""
    return {"type": entry.get("type"), **ASSEMBLERS.check(entry)}


def create_assembler(spec: Mapping[str, Any] | None):
    """The assembler a (checked) ``network.assembler`` spec names; the tap assembler for None."""
    return ASSEMBLERS.build(dict(spec)) if spec else TapAssembler()


def model_inputs(backbone: FrozenEncoder, model: nn.Module, frames: torch.Tensor, assembler=None,
                 mask: torch.Tensor | None = None) -> SideInputs:
    """The SideInputs ``model`` needs for ``frames`` (its tapped layers, the embedding if it reads it)."""
    assembler = assembler or TapAssembler()
    return assembler(backbone, frames, layers=list(model.backbone_layers), embedding=bool(model.needs_embedding),
                     mask=mask)


def run_model(backbone: FrozenEncoder, model: nn.Module, frames: torch.Tensor, assembler=None, *,
              mask: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
    """Frames ``[B, T, 3, H, W]`` (normalised) → logits ``[B, C]``: assemble the inputs, run the model.

    ``chunk`` bounds the clips per backbone + model pass (evaluation with many views); gradients flow
    only into ``model`` (the backbone runs under no-grad, in its own precision).
    """
    if not chunk or frames.shape[0] <= chunk:
        return model(model_inputs(backbone, model, frames, assembler, mask))
    outputs = []
    for start in range(0, frames.shape[0], chunk):
        part_mask = None if mask is None else mask[start:start + chunk]
        outputs.append(model(model_inputs(backbone, model, frames[start:start + chunk], assembler, part_mask)))
    return torch.cat(outputs)


__all__ = ["ASSEMBLERS", "protocol_name", "TapAssembler", "check_assembler_spec", "create_assembler", "model_inputs",
           "run_model"]
