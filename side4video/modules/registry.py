"""Side modules by name: config validation and construction (the table itself is ``SIDE_MODULES`` in __init__)."""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

from torch import nn

from ..errors import ConfigError
from ..config.types import TypeMismatch, check_named_entry
from .base import SLOTS

# Arguments the side network supplies itself to every module whose constructor takes them.
PROVIDED = ("post_norm", "sync_bn", "drop_path", "recompute")
_PLACEMENT = ("type", "slot", "blocks")


def _registry() -> Mapping[str, type]:
    from . import SIDE_MODULES
    return SIDE_MODULES


def _check_blocks(blocks: Any) -> Any:
    if blocks == "all":
        return blocks
    if isinstance(blocks, bool):
        raise TypeMismatch("blocks must be 'all', k (every k-th block, ending at the last) or a list of block indices")
    if isinstance(blocks, int) and blocks >= 1:
        return blocks
    if isinstance(blocks, (list, tuple)) and blocks and all(isinstance(b, int) and not isinstance(b, bool)
                                                             for b in blocks):
        return list(blocks)
    raise TypeMismatch(f"blocks must be 'all', k (every k-th block, ending at the last) or a list of block indices, "
                       f"got {blocks!r}")


def check_side_module_spec(entry: dict) -> dict:
    """``{type, slot, blocks, **kwargs}`` → the same with defaults filled, or TypeMismatch naming the problem."""
    registry = _registry()
    kwargs = check_named_entry("side module", registry, entry, skip=("dim",), placement=_PLACEMENT)
    name = entry["type"]
    module_class = registry[name]
    slot = entry.get("slot", module_class.default_slot)
    if slot not in SLOTS:
        raise TypeMismatch(f"side module '{name}': slot must be one of {', '.join(SLOTS)}, got {slot!r}")
    blocks = _check_blocks(entry.get("blocks", module_class.default_blocks))
    return {"type": name, "slot": slot, "blocks": blocks, **kwargs}


def resolve_blocks(blocks: Any, depth: int, name: str = "side module") -> list[int]:
    """Block indices (0-based, ascending) that a module spec's ``blocks`` selects among ``depth`` side blocks."""
    if blocks == "all":
        return list(range(depth))
    if isinstance(blocks, int):
        return [i for i in range(depth) if (i + 1) % blocks == 0]
    resolved = sorted({b + depth if b < 0 else b for b in blocks})
    bad = [b for b in resolved if not 0 <= b < depth]
    if bad:
        raise ConfigError(f"network.side_modules: {name} names blocks {bad}, but the side network has {depth} "
                          f"blocks (0..{depth - 1})")
    return resolved


def build_side_module(spec: Mapping[str, Any], dim: int, provided: Mapping[str, Any]) -> nn.Module:
    """Instantiate one module of a (checked) spec; ``provided`` supplies PROVIDED arguments the constructor takes."""
    module_class = _registry()[spec["type"]]
    kwargs = {k: v for k, v in spec.items() if k not in _PLACEMENT}
    accepted = inspect.signature(module_class.__init__).parameters
    for key, value in provided.items():
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    try:
        return module_class(dim, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"network.side_modules: cannot build '{spec['type']}' with {kwargs}: {exc}") from None


def module_plan(specs: Sequence[Mapping[str, Any]], depth: int) -> list[dict[str, list[Mapping[str, Any]]]]:
    """Per side block, per slot, the specs of the modules that go there, in the order listed."""
    plan = [{slot: [] for slot in SLOTS} for _ in range(depth)]
    for spec in specs:
        for index in resolve_blocks(spec["blocks"], depth, f"'{spec['type']}'"):
            plan[index][spec["slot"]].append(spec)
    return plan


__all__ = ["PROVIDED", "check_side_module_spec", "resolve_blocks", "build_side_module", "module_plan"]
