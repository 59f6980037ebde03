"""Training checkpoints: one layout for every writer (the trainer and the ablation runner), read back safely.

A checkpoint holds the trainable weights (the frozen backbone is never written; the checkpoint records which
backbone it belongs to: arch, weight file, SHA-256), the optimizer, scheduler and RNG state, the training position
and the config. Files are written atomically (``side4video.files``) and read with ``weights_only=True``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..errors import CheckpointError, InputNotFoundError
from .distributed import prepare_accelerator_env

FORMAT = "side4video-checkpoint-v2"
# v1: the same layout; its weights may carry the names of the first module layout (see LEGACY_RENAMES)
FORMATS = ("side4video-checkpoint-v1", FORMAT)


def _deepspeed_safe_globals() -> list:
    """DeepSpeed optimizer state dicts hold a few small plain classes; allow exactly those when unpickling."""
    prepare_accelerator_env()
    try:
        # deferred: DeepSpeed is heavy, and only optimizer states of its engines need these classes
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler

        # deferred: (as above)
        from deepspeed.runtime.zero.config import ZeroStageEnum

        # deferred: (as above)
        from deepspeed.utils.tensor_fragment import fragment_address
    except ImportError:  # pragma: no cover - deepspeed is a dependency
        return []
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _load_failure(path: Path, exc: Exception) -> CheckpointError:
    """A one-line reason why ``torch.load`` could not read ``path`` (never torch's advice to unpickle unsafely)."""
    text = str(exc)
    if "Weights only load failed" in text or "weights_only" in text:
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


def is_training_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    return checkpoint.get("format") in FORMATS


# -- weights ------------------------------------------------------------------------------------------------------
def cpu_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict as written into checkpoints: detached CPU tensors, floating point ones in fp32 (the master copy
    whatever precision trained them)."""
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in state.items()}


def weights_state(model: torch.nn.Module, validated: torch.nn.Module, parts: Mapping[str, torch.nn.Module],
                  plugins: list) -> dict[str, Any]:
    """The weights of a training checkpoint: ``model`` (what training continues from), ``eval_model`` when
    validation scores another module (a plugin's EMA copy: test.py evaluates it, resume restores it; written only
    here, not again in the plugin's state), the plugins' trainable parts and their other state."""
    state: dict[str, Any] = {"model": cpu_state_dict(model.state_dict())}
    if validated is not model:
        state["eval_model"] = cpu_state_dict(validated.state_dict())
    state["plugin_parts"] = {name: cpu_state_dict(part.state_dict()) for name, part in parts.items()}
    state["plugins"] = {plugin.name: plugin.state_dict() for plugin in plugins}
    return state


def restore_weights(state: Mapping[str, Any], model: torch.nn.Module, validated: torch.nn.Module,
                    parts: Mapping[str, torch.nn.Module], plugins: list) -> None:
    """Load what :func:`weights_state` wrote into the same structure (plugins first, then the validated copy)."""
    model.load_state_dict(rename_legacy_keys(state["model"], state, set(model.state_dict())))
    for name, part in parts.items():
        part.load_state_dict(state.get("plugin_parts", {})[name])
    for plugin in plugins:
        if plugin.name in state.get("plugins", {}):
            plugin.load_state_dict(state["plugins"][plugin.name])
    if validated is not model and "eval_model" in state:
        validated.load_state_dict(rename_legacy_keys(state["eval_model"], state, set(validated.state_dict())))


# Names of trainable weights in the first module layout of this toolkit → today's names.
LEGACY_RENAMES = ((".temporal_norm.", ".pre_attn.0.norm."), (".temporal.", ".pre_attn.0."))


def rename_legacy_keys(state: Mapping[str, torch.Tensor], checkpoint: Mapping[str, Any],
                       model_keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Today's names for the weights of a checkpoint written before the module layout changed (format v1 or a plain
    state dict). A key is renamed only when it is not a name of ``model_keys`` itself (a (2+1)D module has weights
    of its own called ``temporal``) and, given ``model_keys``, its new name is one."""
    if checkpoint.get("format") == FORMAT:
        return dict(state)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        if key.startswith("blocks.") and (model_keys is None or key not in model_keys):
            for old, replacement in LEGACY_RENAMES:
                new = new.replace(old, replacement)
            if model_keys is not None and new not in model_keys:
                new = key
        renamed[new] = value
    return renamed


def trainable_state_dict(checkpoint: dict[str, Any], validated: bool = True,
                         model_keys: set[str] | None = None) -> dict[str, torch.Tensor]:
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
    return rename_legacy_keys(state, checkpoint, model_keys)


def describe_backbone(identity: Mapping[str, Any]) -> str:
    return f"{identity.get('weights')} (sha256 {str(identity.get('sha256'))[:12]}…)"


def backbone_mismatch(checkpoint: Mapping[str, Any], identity: Mapping[str, Any], source: str | Path) -> str | None:
    """None when ``checkpoint`` was trained on the backbone ``identity`` describes, else why not (one line)."""
    saved = checkpoint.get("backbone")
    if not saved:
        return None
    if saved.get("arch") != identity.get("arch"):
        return (f"{source} was trained on backbone {saved.get('arch')!r}, but the config builds "
                f"{identity.get('arch')!r} (network.arch)")
    if saved.get("sha256") != identity.get("sha256"):
        return (f"{source} was trained with backbone weights {describe_backbone(saved)}, but the config loads "
                f"{describe_backbone(identity)}")
    return None


def check_backbone_identity(checkpoint: Mapping[str, Any], identity: Mapping[str, Any], source: str | Path, *,
                            allow_other_weights: bool = False) -> str | None:
    """A checkpoint is only meaningful on the backbone it was trained with: another architecture is always refused;
    other weights of the same architecture are refused unless ``allow_other_weights`` (then the difference is
    returned, for the caller to record)."""
    problem = backbone_mismatch(checkpoint, identity, source)
    if problem is None:
        return None
    if "network.arch" in problem or not allow_other_weights:
        hint = "" if "network.arch" in problem else " (to use them anyway, pass --allow_other_backbone)"
        raise CheckpointError(problem + hint)
    return problem


# -- RNG state (stored as tensors and plain Python so weights_only loading accepts it) ----------------------------
@dataclass
class RngState:
    """The global random streams: Python, NumPy, torch's CPU generator and the current CUDA device's."""
    python: tuple
    numpy: tuple
    torch: torch.Tensor
    cuda: torch.Tensor | None = None

    @classmethod
    def capture(cls) -> "RngState":
        return cls(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                   cuda=torch.cuda.get_rng_state() if torch.cuda.is_available() else None)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.cuda)

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain containers and tensors (what ``weights_only`` loading accepts)."""
        _, keys, pos, has_gauss, cached = self.numpy
        state = {"python": self.python,
                 "numpy": {"keys": torch.from_numpy(np.asarray(keys).astype(np.int64)), "pos": int(pos),
                           "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
                 "torch": self.torch}
        if self.cuda is not None:
            state["cuda"] = self.cuda
        return state

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any]) -> "RngState":
        python = state["python"]
        np_state = state["numpy"]
        return cls(python=(python[0], tuple(python[1]), python[2]),
                   numpy=("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                          np_state["has_gauss"], np_state["cached_gaussian"]),
                   torch=state["torch"], cuda=state.get("cuda"))


def capture_rng_state() -> dict[str, Any]:
    """This process's random streams, as a checkpoint stores them."""
    return RngState.capture().to_checkpoint()


def restore_rng_state(state: Mapping[str, Any]) -> None:
    RngState.from_checkpoint(state).restore()


# -- the one checkpoint layout --------------------------------------------------------------------------------------
def create_checkpoint(*, position: Mapping[str, Any], weights: Mapping[str, Any], optimizer: list,
                     scheduler: Mapping[str, Any], counters: Mapping[str, int], rng: list, backbone: Mapping[str, Any],
                     config: Mapping[str, Any], world_size: int, zero_stage: int, head: str, num_classes: int,
                     metrics: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A training checkpoint (``train.py --resume`` continues it, ``test.py --weights`` tests it):

    ``position`` (epoch, step_in_epoch, global_step, best metric, epoch totals: :class:`~.state.TrainState`),
    ``weights`` (:func:`weights_state`), per-rank ``optimizer`` states and ``rng`` states, the ``scheduler`` state
    and the optimizer backend's step ``counters``, the ``backbone`` identity, the ``config`` (plain containers) and
    the ``metrics`` of the epoch that wrote it; ``extra`` keys (e.g. the ablation variant) are kept as given."""
    return {"format": FORMAT, **position, "world_size": int(world_size), "zero_stage": int(zero_stage), **weights,
            "optimizer": list(optimizer), "scheduler": dict(scheduler), "rng": list(rng),
            "engine_counters": dict(counters), "backbone": dict(backbone), "head": head,
            "num_classes": int(num_classes), "config": dict(config), "metrics": dict(metrics or {}), **extra}


__all__ = ["FORMAT", "FORMATS", "load_checkpoint", "is_training_checkpoint", "cpu_state_dict", "weights_state",
           "restore_weights", "LEGACY_RENAMES", "rename_legacy_keys", "trainable_state_dict", "backbone_mismatch",
           "check_backbone_identity", "describe_backbone", "RngState", "capture_rng_state", "restore_rng_state",
           "create_checkpoint"]
