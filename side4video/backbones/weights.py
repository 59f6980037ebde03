"""Reading backbone weight files in the formats people actually have, and loading them exactly.

Formats: OpenAI TorchScript archives (``ViT-B-16.pt`` as OpenAI distributes them), plain state dicts
(``.pt/.pth/.bin``, read with ``weights_only=True``), ``.safetensors``, open_clip training checkpoints
(``{'state_dict': {'module.visual...'}}``) and BAAI EVA-CLIP checkpoints (``visual.blocks...``).
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from open_clip.model import convert_to_custom_text_state_dict
from safetensors.torch import load_file
from timm.models.eva import checkpoint_filter_fn
from torch import nn

from ..errors import InputNotFoundError, WeightsError

# Keys OpenAI's archives carry besides the weights; their presence marks OpenAI (QuickGELU) weights.
OPENAI_MARKER_KEYS = ("input_resolution", "context_length", "vocab_size")


class WeightMismatchError(WeightsError):
    """Weights that do not fit the architecture; lists what is missing, unexpected or mis-shaped."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], mismatched: list[str]):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


@dataclass
class WeightFile:
    path: Path
    state_dict: dict[str, torch.Tensor]
    format: str          # 'torchscript' | 'safetensors' | 'state_dict' | 'open_clip_checkpoint'
    openai: bool         # OpenAI weights (need QuickGELU)


def is_torchscript_archive(path: str | Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder (plain ``torch.save`` zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def read_weight_file(path: str | Path) -> WeightFile:
    """Read any supported file into a flat ``{key: tensor}`` dict (on CPU, original dtypes)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"backbone weight file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"backbone weight file is empty: {path}")
    if path.suffix == ".safetensors":
        try:
            return _finish(path, load_file(str(path), device="cpu"), "safetensors")
        except Exception as exc:  # safetensors raises its own SafetensorError for a corrupt header
            raise WeightsError(f"cannot read backbone weights from {path}: {str(exc).splitlines()[0][:200]}") from None
    if is_torchscript_archive(path):
        # Only ever reached for a file the user named or placed in clip_pretrain/ themselves.
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            first = str(exc).splitlines()[0][:200]
            raise WeightsError(f"cannot read the TorchScript archive {path}: {first}") from None
        return _finish(path, dict(module.state_dict()), "torchscript")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Weights only load failed" in str(exc):
            reason = "it contains Python objects that cannot be loaded safely (only tensors are read)"
        raise WeightsError(f"cannot read backbone weights from {path}: {reason[:200]}") from None
    fmt = "state_dict"
    if isinstance(loaded, dict):
        for wrapper in ("state_dict", "model", "module"):
            if wrapper in loaded and isinstance(loaded[wrapper], dict):
                loaded, fmt = loaded[wrapper], "open_clip_checkpoint"
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return _finish(path, loaded, fmt)


def _finish(path: Path, state_dict: dict, fmt: str) -> WeightFile:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    openai = fmt == "torchscript" or any(k in state_dict for k in OPENAI_MARKER_KEYS)
    for key in OPENAI_MARKER_KEYS:
        state_dict.pop(key, None)
    return WeightFile(path, state_dict, fmt, openai)


def convert_to_model_keys(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map third-party key layouts onto an open_clip model's keys."""
    has_timm_trunk = hasattr(getattr(model, "visual", None), "trunk")
    if has_timm_trunk and "visual.trunk.pos_embed" not in state_dict and any(
            k.startswith("visual.blocks.") for k in state_dict):
        # BAAI EVA-CLIP layout: timm knows how to convert its vision tower.
        visual = checkpoint_filter_fn({k: v for k, v in state_dict.items() if k.startswith("visual.")},
                                      model.visual.trunk)
        rest = {k: v for k, v in state_dict.items() if not k.startswith("visual.")}
        state_dict = {**{f"visual.trunk.{k}": v for k, v in visual.items()}, **rest}
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)
    # Buffers the model derives itself (e.g. the text attention mask a TorchScript archive also stores).
    persistent = model.state_dict().keys()
    derived = {name for name, _ in model.named_buffers() if name not in persistent}
    state_dict = {k: v for k, v in state_dict.items() if k not in derived}
    if "logit_scale" in state_dict and hasattr(model, "logit_scale"):
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(model.logit_scale.shape)
    return state_dict


def load_exact(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load every model tensor from ``state_dict`` or raise, listing all differences.

    Never leaves a half-random model: missing keys, unexpected keys and shape mismatches are errors.
    """
    state_dict = convert_to_model_keys(dict(state_dict), model)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if missing or unexpected or mismatched:
        def listing(title: str, items: list[str]) -> str:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            return f"{len(items)} {title} ({', '.join(items[:3])}{more})" if items else ""
        parts = [listing("missing from the file", missing), listing("unexpected in the file", unexpected),
                 listing("shape mismatches", mismatched)]
        raise WeightMismatchError(
            f"weights in {source} do not match the architecture: {'; '.join(p for p in parts if p)}; check that "
            "network.arch names the model these weights belong to (the exception lists every tensor)",
            missing, unexpected, mismatched)
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)


_HASH_CACHE: dict[tuple[str, int, float], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) so checkpoints can record it cheaply."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def find_conventional_file(weight_files: list[str], search_dir: str | Path) -> Path | None:
    """The first conventional weight file that exists in ``search_dir``."""
    for name in weight_files:
        candidate = Path(search_dir) / name
        if candidate.is_file():
            return candidate
    return None


def default_pretrained_dir() -> Path:
    """``$SIDE4VIDEO_PRETRAINED_DIR`` or ``./clip_pretrain``."""
    return Path(os.environ.get("SIDE4VIDEO_PRETRAINED_DIR", "clip_pretrain"))
