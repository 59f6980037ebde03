"""Frozen CLIP / EVA-CLIP image encoders loaded from local weight files."""
from .factory import backbone_identity, create_backbone, create_open_clip_model, describe_backbone
from .frozen import BackboneInfo, FrozenEncoder, TapOutput
from .names import known_arch_names, resolve_arch
from .weights import WeightMismatchError, read_weight_file

__all__ = ["create_backbone", "describe_backbone", "backbone_identity", "create_open_clip_model", "BackboneInfo",
           "FrozenEncoder", "TapOutput", "known_arch_names", "resolve_arch", "WeightMismatchError", "read_weight_file"]
