"""Optimizer parameter groups and per-iteration learning-rate schedules."""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import ConfigError

NO_DECAY_NAMES = ("pos_embed", "frame_pos", "positional_embedding", "cls_token")


def _wants_no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm weights, biases and position embeddings: 1-D tensors or named embeddings."""
    return param.ndim <= 1 or any(token in name for token in NO_DECAY_NAMES)


# ``solver.lr_mult`` aliases: names people use for parts of the model → parameter-name prefixes.
ALIASES = {"head": ("fc", "head_norm")}


def _expand_aliases(lr_mult: Mapping[str, float], names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, mult in lr_mult.items():
        targets = ALIASES.get(key) if not any(n == key or n.startswith(key + ".") for n in names) else None
        for target in targets or (key,):
            out[target] = mult
    return out


def param_groups(model: nn.Module, weight_decay: float, *, decay_all: bool = False,
                 lr_mult: Mapping[str, float] | None = None, prefix: str = "",
                 own_groups: Mapping[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Trainable parameters split by (own part, lr multiplier, decay or not).

    ``lr_mult`` maps a parameter-name prefix (e.g. ``fc`` or ``blocks.0``; ``head`` means the classifier) to a
    multiplier of the base lr; the longest matching prefix wins. ``decay_all`` reproduces the reference, which
    decays everything. ``prefix`` is stripped from parameter names before matching (the trainer wraps the model
    as ``model.``; plugin parts are ``parts.<plugin>.``). ``own_groups`` maps a name prefix (a plugin's part) to
    its weight decay (None: ``weight_decay``): its parameters never share a group with the rest.
    """
    named = [(name[len(prefix):] if prefix and name.startswith(prefix) else name, param)
             for name, param in model.named_parameters() if param.requires_grad]
    lr_mult = _expand_aliases(dict(lr_mult or {}), [name for name, _ in named])
    own_groups = dict(own_groups or {})
    groups: dict[tuple[str, float, bool], dict[str, Any]] = {}
    for name, param in named:
        prefixes = [p for p in lr_mult if name == p or name.startswith(p + ".")]
        mult = float(lr_mult[max(prefixes, key=len)]) if prefixes else 1.0
        part = next((p for p in own_groups if name.startswith(p + ".")), "")
        base_decay = weight_decay if own_groups.get(part) is None else float(own_groups[part])
        decay = decay_all or not _wants_no_decay(name, param)
        group = groups.setdefault((part, mult, decay), {"params": [], "names": [], "lr_mult": mult,
                                                        "weight_decay": base_decay if decay else 0.0})
        group["params"].append(param)
        group["names"].append(name)
    names = [n for g in groups.values() for n in g["names"]]
    unused = [p for p in lr_mult if not any(n == p or n.startswith(p + ".") for n in names)]
    if unused:
        tops = sorted({n.split(".")[0] for g in groups.values() for n in g["names"]})
        raise ConfigError(f"solver.lr_mult: no trainable parameter starts with {unused}; the model's parts are "
                          f"{', '.join(tops)} (and 'head' for the classifier)")
    return [groups[key] for key in sorted(groups)]


# The hook a module defines to ask for lr multipliers of its own parts (e.g. the retrieval model's trainable text
# tower at 1e-3 x lr): ``module.param_lr_mult() -> {name prefix relative to the module: multiplier}``.
LR_MULT_HOOK = "param_lr_mult"


def module_lr_mult(model: nn.Module, prefix: str = "") -> dict[str, float]:
    """The multipliers that ``model``'s submodules ask for through :data:`LR_MULT_HOOK`, keyed by parameter-name
    prefixes of ``model`` (``prefix`` stripped, as :func:`param_groups` strips it from parameter names)."""
    out: dict[str, float] = {}
    for module_name, module in model.named_modules():
        hook = getattr(module, LR_MULT_HOOK, None)
        if not callable(hook):
            continue
        for key, mult in hook().items():
            name = f"{module_name}.{key}" if module_name else key
            out[name[len(prefix):] if prefix and name.startswith(prefix) else name] = float(mult)
    return out


def create_optimizer(model: nn.Module, solver, *, lr_mult: Mapping[str, float] | None = None,
                    prefix: str = "") -> torch.optim.Optimizer:
    """AdamW or SGD over :func:`param_groups`; ``foreach`` kernels (one launch for all tensors of a group) on every
    device, ``fused`` AdamW on CUDA.

    The multipliers are the model's own (:func:`module_lr_mult`, e.g. the retrieval task's ``text_lr_mult``) with
    ``lr_mult`` (default ``solver.lr_mult``) on top: an explicit entry for the same prefix wins, and the longest
    matching prefix picks a parameter's multiplier."""
    explicit = solver.lr_mult if lr_mult is None else lr_mult
    multipliers = {**module_lr_mult(model, prefix), **dict(explicit or {})}
    # a model with plugin parts (TrainableParts) names the parts that get their own groups
    groups = param_groups(model, solver.weight_decay, decay_all=solver.weight_decay_all,
                          lr_mult=multipliers, prefix=prefix, own_groups=getattr(model, "own_groups", None))
    for group in groups:
        group["lr"] = solver.lr * group["lr_mult"]
        group.pop("names")
    on_cuda = any(p.is_cuda for g in groups for p in g["params"])
    if solver.optim == "adamw":
        fast = {"fused": True} if on_cuda else {"foreach": True}
        return torch.optim.AdamW(groups, lr=solver.lr, betas=tuple(solver.betas), eps=solver.eps, **fast)
    if solver.optim == "sgd":
        return torch.optim.SGD(groups, lr=solver.lr, momentum=solver.momentum, foreach=True)
    raise ValueError(f"unknown optimizer {solver.optim!r}")


def lr_factor_fn(solver, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of each group's lr at optimizer step ``s`` (0-based): linear warm-up, then cosine or steps."""
    warmup = int(round(solver.lr_warmup_step * steps_per_epoch))
    total = max(int(solver.epochs * steps_per_epoch), 1)
    floor = solver.min_lr / solver.lr if solver.lr > 0 else 0.0
    boundaries = [int(e * steps_per_epoch) for e in solver.lr_steps]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if solver.type == "step":
            return solver.lr_decay ** sum(step >= b for b in boundaries)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def base_lr(groups: list[dict[str, Any]]) -> float:
    """The schedule's current base lr (``solver.lr`` x factor) from an optimizer's groups: what logs report as
    ``lr``. Groups are sorted by multiplier, so the first one may be a part trained at a fraction of the rate (the
    retrieval text tower at 1e-3 x): a multiplier-1 group's lr, else the first group's divided by its multiplier."""
    for group in groups:
        if group.get("lr_mult", 1.0) == 1.0:
            return float(group["lr"])
    return float(groups[0]["lr"]) / float(groups[0].get("lr_mult", 1.0))


def create_scheduler(optimizer: torch.optim.Optimizer, solver, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(solver, steps_per_epoch))
