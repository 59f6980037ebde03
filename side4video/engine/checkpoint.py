"""Training checkpoints: trainable weights + optimizer, scheduler and RNG state + the backbone's identity.

The frozen backbone is never written; a checkpoint records which backbone it belongs to (arch, weight file,
SHA-256). Files are written atomically (temp file + rename) and read with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import torch

from ..errors import CheckpointError, InputNotFoundError

FORMAT = "side4video-checkpoint-v1"


def _deepspeed_safe_globals() -> list:
    """DeepSpeed optimizer state dicts hold a few small plain classes; allow exactly those when unpickling."""
    from .distributed import prepare_accelerator_env
    prepare_accelerator_env()
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # pragma: no cover - deepspeed is a dependency
        return []
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files that an atomic write killed midway leaves behind (``.NAME.tmpPID``) whose
    writing process is gone; returns what was removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for candidate in folder.glob(".*.tmp*"):
        pid = candidate.name.rsplit(".tmp", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write through ``write(handle)`` into a temporary file in the same folder, flush it to disk, then rename
    it over ``path``: a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` with :func:`atomic_write`."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_copy(source: str | Path, target: str | Path) -> None:
    """Copy a finished checkpoint (e.g. last.pt → best.pt) so that ``target`` is never half-written."""
    with open(source, "rb") as handle:
        atomic_write(target, lambda out: shutil.copyfileobj(handle, out))


def _load_failure(path: Path, exc: Exception) -> CheckpointError:
    """A one-line reason why ``torch.load`` could not read ``path`` (never torch's advice to unpickle unsafely)."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
        import re
        names = re.findall(r"GLOBAL ([\w.]+)", text) or re.findall(r"Unsupported global: ([\w.]+)", text)
        what = f" ({names[0]})" if names else ""
        return CheckpointError(f"cannot read checkpoint {path}: it contains Python objects{what} that cannot be "
                               "loaded safely; only plain tensors, numbers and containers are read")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "zip archive" in first or "central directory" in first or "invalid load key" in first or \
            isinstance(exc, (EOFError, RuntimeError)):
        return CheckpointError(f"cannot read checkpoint {path}: the file is truncated or not a PyTorch checkpoint "
                               f"({first[:160]})")
    return CheckpointError(f"cannot read checkpoint {path}: {first[:200]}")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint (or a plain state dict) with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty (0 bytes)")
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise _load_failure(path, exc) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a checkpoint or a state dict")
    return loaded


def cpu_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as written into checkpoints: detached CPU tensors, floating point ones in fp32 (the master copy
    whatever precision trained them)."""
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def weights_state(model: torch.nn.Module, validated: torch.nn.Module, parts: Mapping[str, torch.nn.Module],
                  plugins: list) -> dict[str, Any]:
    """The weights of a training checkpoint (the trainer and the ablation runner write the same layout): ``model``
    (what training continues from), ``eval_model`` when validation scores another module (a plugin's EMA copy:
    test.py evaluates it, resume restores it; written only here, not again in the plugin's state), the plugins'
    trainable parts and their other state."""
    state: dict[str, Any] = {"model": cpu_state_dict(model.state_dict())}
    if validated is not model:
        state["eval_model"] = cpu_state_dict(validated.state_dict())
    state["plugin_parts"] = {name: cpu_state_dict(part.state_dict()) for name, part in parts.items()}
    state["plugins"] = {plugin.name: plugin.state_dict() for plugin in plugins}
    return state


def restore_weights(state: Mapping[str, Any], model: torch.nn.Module, validated: torch.nn.Module,
                    parts: Mapping[str, torch.nn.Module], plugins: list) -> None:
    """Load what :func:`weights_state` wrote into the same structure (plugins first, then the validated copy)."""
    model.load_state_dict(state["model"])
    for name, part in parts.items():
        part.load_state_dict(state.get("plugin_parts", {})[name])
    for plugin in plugins:
        if plugin.name in state.get("plugins", {}):
            plugin.load_state_dict(state["plugins"][plugin.name])
    if validated is not model and "eval_model" in state:
        validated.load_state_dict(state["eval_model"])


# Names of trainable weights in earlier versions of this toolkit → today's names.
_RENAMED_KEYS = ((".temporal_norm.", ".pre_attn.0.norm."), (".temporal.", ".pre_attn.0."))


def trainable_state_dict(checkpoint: dict[str, Any], validated: bool = True) -> dict[str, torch.Tensor]:
    """The trainable weights from one of our checkpoints or from a plain state dict (older key names renamed).

    ``validated``: the weights validation scored when a plugin provided them (e.g. the EMA copy of an ``ema`` or
    ``svmix`` run, ``eval_model``), else the trained model's (``model``)."""
    if validated and isinstance(checkpoint.get("eval_model"), dict):
        state = checkpoint["eval_model"]
    elif "model" in checkpoint and isinstance(checkpoint["model"], dict):
        state = checkpoint["model"]
    elif checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise CheckpointError("not a side4video checkpoint, an official Side4Video checkpoint or a state dict of "
                              "tensors")
    renamed = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            for old, new in _RENAMED_KEYS:
                key = key.replace(old, new)
        renamed[key] = value
    return renamed


def check_backbone_identity(checkpoint: dict[str, Any], identity: dict[str, Any], source: str | Path) -> None:
    """A checkpoint is only meaningful on the backbone it was trained with."""
    saved = checkpoint.get("backbone")
    if not saved:
        return
    if saved.get("arch") != identity.get("arch"):
        raise CheckpointError(f"{source} was trained on backbone {saved.get('arch')!r}, "
                              f"but the config builds {identity.get('arch')!r} (network.arch)")
    if saved.get("sha256") != identity.get("sha256"):
        warnings.warn(f"{source} was trained with backbone weights {saved.get('weights')} "
                      f"(sha256 {str(saved.get('sha256'))[:12]}…), now using {identity.get('weights')} "
                      f"(sha256 {str(identity.get('sha256'))[:12]}…)", stacklevel=2)


# -- RNG state (stored as tensors and plain Python so weights_only loading accepts it) ----------------------
def capture_rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -- DeepSpeed optimizer state --------------------------------------------------------------------------------
def optimizer_state(engine) -> dict[str, Any]:
    return engine.optimizer.state_dict()


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
