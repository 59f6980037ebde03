"""Backbone names: OpenAI spellings, open_clip names, BAAI EVA-CLIP names, JSON config paths.

Every name resolves to an open_clip model config (a dict) plus the conventional weight files that
``clip_pretrain/`` is expected to hold for it.
"""
from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip

from ..errors import ConfigError, InputNotFoundError

# OpenAI spelling → open_clip name, and the file OpenAI distributes (a TorchScript archive).
OPENAI_ARCHS: dict[str, tuple[str, str]] = {
    "ViT-B/32": ("ViT-B-32", "ViT-B-32.pt"),
    "ViT-B/16": ("ViT-B-16", "ViT-B-16.pt"),
    "ViT-L/14": ("ViT-L-14", "ViT-L-14.pt"),
    "ViT-L/14@336px": ("ViT-L-14-336", "ViT-L-14-336px.pt"),
}
# BAAI EVA-CLIP names (as in the Side4Video configs) → open_clip name, and BAAI's file names.
EVA_ARCHS: dict[str, tuple[str, str]] = {
    "EVA02-CLIP-B-16": ("EVA02-B-16", "EVA02_CLIP_B_psz16_s8B.pt"),
    "EVA02-CLIP-L-14": ("EVA02-L-14", "EVA02_CLIP_L_psz14_s4B.pt"),
    "EVA02-CLIP-L-14-336": ("EVA02-L-14-336", "EVA02_CLIP_L_336_psz14_s6B.pt"),
    "EVA02-CLIP-bigE-14": ("EVA02-E-14", "EVA02_CLIP_E_psz14_s4B.pt"),
    "EVA02-CLIP-bigE-14-plus": ("EVA02-E-14-plus", "EVA02_CLIP_E_psz14_plus_s9B.pt"),
}
_ALIASES: dict[str, str] = {
    "ViT-L/14-336": "ViT-L/14@336px", "ViT-L-14-336px": "ViT-L/14@336px", "ViT-L/14@336": "ViT-L/14@336px",
}
WEIGHT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")


@dataclass
class ArchSpec:
    """What a backbone name resolves to."""
    name: str                      # canonical name (open_clip spelling, or the JSON file stem)
    model_cfg: dict[str, Any]      # open_clip model config (embed_dim, vision_cfg, text_cfg, ...)
    weight_files: list[str] = field(default_factory=list)  # conventional file names, preferred first
    config_path: Path | None = None  # the JSON file, when the arch was given as a path
    openai: bool = False           # the conventional weights are OpenAI's (QuickGELU)

    @property
    def is_timm(self) -> bool:
        return bool(self.model_cfg.get("vision_cfg", {}).get("timm_model_name"))


def _open_clip_files(name: str) -> list[str]:
    files = [f"{name}{ext}" for ext in WEIGHT_EXTENSIONS]
    # A folder as downloaded from the hub: clip_pretrain/<name>/open_clip_model.safetensors
    files += [f"{name}/open_clip_model.safetensors", f"{name}/open_clip_pytorch_model.bin"]
    return files


def known_arch_names() -> list[str]:
    """Names accepted besides JSON paths (OpenAI, BAAI EVA-CLIP, and every open_clip ViT config)."""
    return sorted(set(OPENAI_ARCHS) | set(EVA_ARCHS) | set(open_clip.list_models()))


def resolve_arch(arch: str | Path) -> ArchSpec:
    """Resolve a backbone name or JSON config path to an :class:`ArchSpec`.

    Accepts ``ViT-B/16`` and ``ViT-B-16`` alike, BAAI names such as ``EVA02-CLIP-L-14``, any open_clip
    config name (``EVA02-B-16``, ``ViT-B-16-quickgelu``, ...), or a path to an open_clip-style JSON file.
    """
    text = str(arch)
    if text.endswith(".json"):
        path = Path(text)
        if not path.is_file():
            raise InputNotFoundError(f"backbone config not found: {path} (network.arch)")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON ({exc})") from None
        if "vision_cfg" not in cfg or "embed_dim" not in cfg:
            raise ConfigError(f"{path}: an open_clip model config needs 'embed_dim' and 'vision_cfg'")
        files = [f"{path.stem}{ext}" for ext in WEIGHT_EXTENSIONS]
        return ArchSpec(path.stem, cfg, files, config_path=path)

    text = _ALIASES.get(text, text)
    openai_by_dash = {v[0]: k for k, v in OPENAI_ARCHS.items()}
    if text in OPENAI_ARCHS or text in openai_by_dash:
        openai_name = text if text in OPENAI_ARCHS else openai_by_dash[text]
        name, file = OPENAI_ARCHS[openai_name]
        return ArchSpec(name, _builtin_cfg(name), [file] + _open_clip_files(name), openai=True)
    if text in EVA_ARCHS:
        name, file = EVA_ARCHS[text]
        return ArchSpec(name, _builtin_cfg(name), [file] + _open_clip_files(name))
    eva_by_name = {v[0]: v[1] for v in EVA_ARCHS.values()}
    name = text.replace("/", "-")
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        close = difflib.get_close_matches(text, known_arch_names(), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown backbone '{arch}' (network.arch).{hint} Give an OpenAI/open_clip/EVA02 name or a "
                          "JSON config path.")
    files = ([eva_by_name[name]] if name in eva_by_name else []) + _open_clip_files(name)
    return ArchSpec(name, copy.deepcopy(cfg), files, openai=name.endswith("quickgelu"))


def _builtin_cfg(name: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(name)
    if cfg is None:  # pragma: no cover - depends on the installed open_clip
        raise ValueError(f"open_clip {open_clip.__version__} has no config '{name}'")
    return copy.deepcopy(cfg)
