"""Where side modules go: a config entry's placement (slot, blocks) checked, and the per-block plan the side network
builds from. The modules themselves are in the ``SIDE_MODULES`` registry (``modules/base.py``)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from ..errors import ConfigError
from ..registry import shown
from .base import SIDE_MODULES, SLOTS

# Arguments the side network supplies itself to every module whose constructor takes them.
PROVIDED = ("post_norm", "sync_bn", "drop_path", "recompute", "causal")
PLACEMENT = ("slot", "blocks")
BLOCKS_DOC = "'all', k (every k-th block, ending at the last) or a list of block indices"


def _check_blocks(name: str, blocks: Any) -> Any:
    if blocks == "all":
        return blocks
    if isinstance(blocks, int) and not isinstance(blocks, bool) and blocks >= 1:
        return blocks
    if isinstance(blocks, (list, tuple)) and blocks and all(isinstance(b, int) and not isinstance(b, bool)
                                                             for b in blocks):
        return list(blocks)
    raise ConfigError(f"side module '{name}': blocks must be {BLOCKS_DOC}, got {shown(blocks)}")


def check_side_module_spec(entry: Mapping[str, Any]) -> dict:
    """``{type, slot, blocks, **kwargs}`` → the same with defaults filled, or a one-line ConfigError naming the
    problem (unknown module or argument with the closest name, a value of the wrong type, a bad slot)."""
    kwargs = SIDE_MODULES.check(entry, reserved=PLACEMENT)
    name = entry["type"]
    module_class = SIDE_MODULES.get(name)
    slot = entry.get("slot", module_class.default_slot)
    if slot not in SLOTS:
        raise ConfigError(f"side module '{name}': slot must be one of {', '.join(SLOTS)}, got {shown(slot)}")
    blocks = _check_blocks(name, entry.get("blocks", module_class.default_blocks))
    return {"type": name, "slot": slot, "blocks": blocks, **kwargs}


def check_causal_form(names: Sequence[str], where: str = "network.causal") -> None:
    """One-line ConfigError naming the first side module among ``names`` that has no causal form."""
    for name in names:
        if name == "none":
            continue
        if not SIDE_MODULES.get(name).has_causal_form:
            able = [n for n in SIDE_MODULES.names() if SIDE_MODULES.get(n).has_causal_form]
            raise ConfigError(f"{where}: side module '{name}' has no causal form (it looks at later frames); "
                              f"causal side modules: {', '.join(able)}")


def resolve_blocks(blocks: Any, depth: int, name: str = "side module") -> list[int]:
    """Block indices (0-based, ascending) that a module spec's ``blocks`` selects among ``depth`` side blocks."""
    if blocks == "all":
        return list(range(depth))
    if isinstance(blocks, int):
        return [i for i in range(depth) if (i + 1) % blocks == 0]
    bad = [b for b in blocks if not -depth <= b < depth]
    if bad:
        # quote the values as written (a negative index counts from the end)
        raise ConfigError(f"network.side_modules: {name} names blocks {bad}, but the side network has {depth} "
                          f"blocks (0..{depth - 1}, or -{depth}..-1 from the end)")
    return sorted({b + depth if b < 0 else b for b in blocks})


def create_side_module(spec: Mapping[str, Any], dim: int, provided: Mapping[str, Any]) -> nn.Module:
    """Instantiate one module of a (checked) spec; ``provided`` supplies PROVIDED arguments the constructor takes."""
    return SIDE_MODULES.build(spec, dim, provided=provided, reserved=PLACEMENT)


def module_plan(specs: Sequence[Mapping[str, Any]], depth: int) -> list[dict[str, list[Mapping[str, Any]]]]:
    """Per side block, per slot, the specs of the modules that go there, in the order listed."""
    plan: list[dict[str, list[Mapping[str, Any]]]] = [{slot: [] for slot in SLOTS} for _ in range(depth)]
    for spec in specs:
        for index in resolve_blocks(spec["blocks"], depth, f"'{spec['type']}'"):
            plan[index][spec["slot"]].append(spec)
    return plan


__all__ = [
    "PROVIDED", "PLACEMENT", "check_causal_form", "check_side_module_spec", "resolve_blocks", "create_side_module",
    "module_plan"
]
