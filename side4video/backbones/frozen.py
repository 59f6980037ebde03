"""A frozen image encoder that can hand out every layer's token sequence.

The encoder never trains: no parameter requires grad, it stays in eval mode whatever ``train()`` is
called with, every forward runs under ``torch.no_grad()``, and its precision is its own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Union

import torch
from torch import nn

LayerSpec = Union[str, int, Sequence[int], None]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TapOutput:
    """What :meth:`FrozenEncoder.tap` returns (in the encoder's precision, never requiring grad)."""
    cls_tokens: list[torch.Tensor]      # per tapped layer: [B*T, 1, W]
    patch_tokens: list[torch.Tensor]    # per tapped layer: [B*T, N, W]
    layers: list[int]                   # 0-based indices of the tapped layers, ascending
    embedding: torch.Tensor | None = None  # final image embedding [B*T, E], same as open_clip encode_image

    @property
    def tokens(self) -> list[torch.Tensor]:
        """Full token sequences ``[B*T, 1+N, W]`` (class token first), one per tapped layer."""
        return [torch.cat([c, p], dim=1) for c, p in zip(self.cls_tokens, self.patch_tokens)]


@dataclass
class BackboneInfo:
    """Static facts about the backbone that the side network and the checkpoints need."""
    arch: str
    family: str                 # 'clip' (open_clip ViT) or 'eva' (timm EVA trunk)
    width: int                  # token width W
    num_layers: int
    patch_size: int
    image_size: int
    embed_dim: int
    weights: str | None         # weight file path, or None for random weights
    weights_format: str | None
    quick_gelu: bool
    extra: dict = field(default_factory=dict)

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2


def select_layers(num_layers: int, layers: LayerSpec = "all") -> list[int]:
    """Which 0-based layers to tap: ``'all'`` | ``'every_other'`` | ``k`` (every k-th layer, ending at the last:
    k-1, 2k-1, ...) | an explicit list (negative indices count from the end) | ``None``/``[]`` (none)."""
    n = num_layers
    if layers is None or (isinstance(layers, (list, tuple)) and len(layers) == 0):
        return []
    if layers == "all":
        return list(range(n))
    if layers == "every_other":
        layers = 2
    if isinstance(layers, int) and not isinstance(layers, bool):
        if layers < 1:
            raise ValueError(f"every-k-th layer selection needs k >= 1, got {layers}")
        return [i for i in range(n) if (i + 1) % layers == 0]
    if isinstance(layers, (list, tuple)):
        resolved = sorted({i + n if i < 0 else i for i in layers})
        bad = [i for i in resolved if not 0 <= i < n]
        if bad:
            raise ValueError(f"layer indices {bad} out of range for a {n}-layer backbone")
        return resolved
    raise ValueError(f"cannot interpret layer selection {layers!r}")


class FrozenEncoder(nn.Module):
    """Wraps an open_clip model (OpenAI-style ViT or timm EVA tower) and freezes it."""

    def __init__(self, clip_model: nn.Module, info: BackboneInfo, precision: str = "fp32",
                 keep_text_tower: bool = False):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"backbone precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self._text_kept = keep_text_tower
        if not keep_text_tower:
            drop_text_tower(clip_model)
        self.model = clip_model
        self.info = info
        self.dtype = PRECISIONS[precision]
        self.model.to(self.dtype)
        self.model.requires_grad_(False)
        self.model.eval()
        visual = clip_model.visual
        if not hasattr(visual, "trunk") and not hasattr(visual, "transformer"):
            raise TypeError(f"{info.arch}: only ViT towers have per-layer tokens; "
                            f"{type(visual).__name__} is not supported")

    # -- frozen behaviour ---------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "FrozenEncoder":
        """Frozen: the wrapped model stays in eval mode (dropout off, norms fixed) whatever ``mode`` is."""
        super().train(False)
        return self

    @property
    def has_text_tower(self) -> bool:
        return self._text_kept and hasattr(self.model, "encode_text")

    # -- forward paths ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """open_clip's ``encode_image`` on ``[B, 3, H, W]`` (or ``[B, T, 3, H, W]``, flattened)."""
        images = self._prepare(images)
        with torch.autocast(images.device.type, enabled=False):
            return self.model.encode_image(images, normalize=normalize)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if not self.has_text_tower:
            raise RuntimeError(f"{self.info.arch}: the text tower was not kept (keep_text_tower=True) "
                               "or these weights have none")
        return self.model.encode_text(tokens, normalize=normalize)

    def resolve_layers(self, layers: LayerSpec = "all") -> list[int]:
        """See :func:`select_layers`."""
        return select_layers(self.info.num_layers, layers)

    def tap(self, images: torch.Tensor, layers: LayerSpec = "all", embedding: bool = True, *,
            input_grad: bool = False) -> TapOutput:
        """Run the frozen encoder once; return the chosen layers' class and patch tokens (+ the embedding).

        Uses the towers' public ``forward_intermediates`` (open_clip ViT and timm trunks alike), stopping after
        the last tapped layer when the final embedding is not needed. Runs in the encoder's own precision
        whatever autocast the caller is under, and under no-grad, unless ``input_grad`` asks for gradients with
        respect to the input pixels (learned pixel mixing, e.g. SV-Mix's MixBlock); the encoder's own weights
        never receive a gradient either way.
        """
        with torch.set_grad_enabled(input_grad and torch.is_grad_enabled()):
            return self._tap(images, layers, embedding)

    def _tap(self, images: torch.Tensor, layers: LayerSpec, embedding: bool) -> TapOutput:
        images = self._prepare(images)
        wanted = self.resolve_layers(layers)
        with torch.autocast(images.device.type, enabled=False):
            if not wanted:
                final = self.model.encode_image(images) if embedding else None
                return TapOutput([], [], [], final)
            out = self.model.visual.forward_intermediates(
                images, indices=wanted, stop_early=not embedding, intermediates_only=not embedding,
                output_fmt="NLC", output_extra_tokens=True)
        return TapOutput(cls_tokens=out["image_intermediates_prefix"], patch_tokens=out["image_intermediates"],
                         layers=wanted, embedding=out.get("image_features") if embedding else None)

    def forward(self, images: torch.Tensor, layers: LayerSpec = "all", embedding: bool = True) -> TapOutput:
        return self.tap(images, layers=layers, embedding=embedding)

    def with_input_grad(self) -> "_InputGradEncoder":
        """This encoder as seen by a branch that needs gradients with respect to the pixels (see ``tap``)."""
        return _InputGradEncoder(self)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 5:
            images = images.flatten(0, 1)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] or [B, T, 3, H, W], got {tuple(images.shape)}")
        return images.to(self.dtype)


class _InputGradEncoder:
    """A FrozenEncoder whose ``tap`` keeps autograd to the input pixels; everything else is the encoder's own."""

    def __init__(self, encoder: FrozenEncoder):
        self._encoder = encoder

    def tap(self, images: torch.Tensor, layers: LayerSpec = "all", embedding: bool = True) -> TapOutput:
        return self._encoder.tap(images, layers=layers, embedding=embedding, input_grad=True)

    __call__ = tap

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)


def drop_text_tower(model: nn.Module) -> None:
    """Free everything but the image tower (text encoder, logit scale): recognition never uses it."""
    for name in [n for n in model._modules if n != "visual"]:
        del model._modules[name]
    for name in list(model._parameters):
        del model._parameters[name]
