"""The few places where this toolkit reaches into DeepSpeed beyond its public API, kept in one file.

A resumed run must continue DeepSpeed's step counters exactly (they decide accumulation boundaries and what
``global_steps`` plugins see), and a ZeRO optimizer's partitions are restored through the optimizer's own loader,
which needs the engine's parameter shapes. DeepSpeed's public checkpoint API writes a folder of per-rank files;
the single-file, trainable-only ``best.pt`` users get today needs these instead. ``tests`` check that every name
used here still exists, so a DeepSpeed upgrade that moves one fails there, not in a user's resumed run.
"""
from __future__ import annotations

from typing import Any, Mapping

# Engine attributes read and written here (the counters are plain attributes DeepSpeed keeps on its engine).
COUNTER_ATTRIBUTES = ("micro_steps", "global_steps", "global_samples")
# Engine methods used here that are not part of DeepSpeed's documented API.
PRIVATE_METHODS = ("_get_zero_param_shapes",)


def counters(engine) -> dict[str, int]:
    """DeepSpeed's step counters of ``engine``."""
    return {name: int(getattr(engine, name)) for name in COUNTER_ATTRIBUTES}


def set_counters(engine, values: Mapping[str, int]) -> None:
    """Restore the step counters (what ``engine.load_checkpoint`` would set)."""
    for name in COUNTER_ATTRIBUTES:
        setattr(engine, name, int(values[name]))


def load_optimizer_state(engine, per_rank_states: list[dict[str, Any]], rank: int) -> None:
    """Restore the optimizer the way DeepSpeed's own checkpoint loader does for this optimizer kind."""
    if engine.zero_optimization():
        # ZeRO partitions are per rank; DeepSpeed picks this rank's part from the full list.
        engine.optimizer.load_state_dict(state_dict_list=per_rank_states, load_optimizer_states=True,
                                         load_from_fp32_weights=engine.zero_load_from_fp32_weights(),
                                         checkpoint_folder=None, load_serial=None,
                                         param_shapes=engine._get_zero_param_shapes())
    elif engine.fp16_enabled() or engine.bfloat16_enabled():
        engine.optimizer.load_state_dict(per_rank_states[rank], load_optimizer_states=True)
    else:
        engine.optimizer.load_state_dict(per_rank_states[rank])


def missing_names(engine) -> list[str]:
    """The names this adapter relies on that ``engine`` lacks (empty: the adapter fits this DeepSpeed)."""
    return [name for name in (*COUNTER_ATTRIBUTES, *PRIVATE_METHODS) if not hasattr(engine, name)]


__all__ = ["COUNTER_ATTRIBUTES", "PRIVATE_METHODS", "counters", "set_counters", "load_optimizer_state",
           "missing_names"]
