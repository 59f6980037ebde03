"""Ablation of side modules: every variant trained side by side on ONE frozen-backbone pass per batch.

    python -m side4video.tools.ablation --config configs/toy/ablation.yaml [--out DIR] [--opts KEY=VALUE ...]
                                        [--only NAME ...] [--report PATH | --no-report] [--no-check]

Each variant is its own model, optimizer, learning-rate schedule, RNG stream and checkpoint, but they all see
the same batches in the same order with the same augmentation (one loader), and per batch the frozen backbone is
tapped once, for the union of the layers the variants read (and the final embedding if any variant needs it);
each variant then gets the :class:`~side4video.models.SideInputs` of its own ``model.backbone_layers``. Comparing
N variants therefore costs one data pass and one backbone pass per batch instead of N of each.

The ablation YAML::

    base: configs/toy/toy_side4video.yaml   # a normal training config (data, solver, logging, default network)
    output: exp/ablation/toy                # default of --out
    report: benchmarks/results/ablation.md  # optional: also write the report there (--report / --no-report)
    reference: conv                         # step times are divided by this variant's (default: the first)
    budget:                                 # the same for every variant
      epochs: 10                            # solver.epochs (default: the base's)
      val_every: 0                          # 1-view validation every N epochs (0: only the final test)
      test_crops: 3                         # final test views of the val list: crops x clips
      test_clips: 2
    timing:
      warmup_batches: 2                     # first batches left out of the time medians
      check: [conv, none]                   # real measurement of the saving: these variants trained again, fresh,
      check_epochs: 1                       #   side by side and then each alone (own loader + backbone pass)
    variants:                               # name: [A-Za-z0-9_.-], unique; it names DIR/<name>/
      - {name: conv}                        # the base's network section as it is
      - {name: none, network: {temporal_module: none}}          # overrides of the network section
      - {name: gc, config: configs/toy/toy_gc.yaml}             # the network section of another config
      - {name: gc_t, config: configs/toy/toy_gc.yaml,           # ... with overrides on top
         network: {side_modules: [{type: gc, calibrators: T}]}}
      - {name: conv_mix, solver: {mixup: 0.8}}                  # plugin keys only: plugins, mixup, cutmix, ...

Relative paths (``base``, a variant's ``config``, ``output``, ``report``) are read from the working directory, or
else from the ablation file's folder. Variant keys are checked by the package's config loader (unknown keys stop
with a one-line hint). The variants share the data, the solver settings and the budget; only the network section
(and training plugins) may differ, and not the backbone (``network.arch``, ``pretrained``, ...: a variant config
file's backbone keys are ignored, the base's backbone serves every variant).

Training plugins that change pixels or the backbone features (``on_batch`` / ``on_inputs``, e.g. mixup, SV-Mix)
cannot use the shared pass: such a variant is trained in the same loop on the same batches with its own backbone
pass (marked "own backbone pass" in the table). A clip assembler other than the default tap
(``network.assembler: {type: cluster}``) needs another sampler and other frames: it is refused (train it with
train.py).

The optimizers are plain PyTorch (``engine.optim.build_optimizer`` / ``build_scheduler`` with the base's solver
settings; gradient accumulation, clipping, bf16/fp16 autocast handled here): DeepSpeed engines per variant are
not needed for a one-process comparison (``solver.zero_stage`` is ignored). One process only (no torchrun).

Measured, in the same run: per batch the data wait, the backbone pass and every variant's
forward + backward + optimizer step (synchronised timers; medians after ``warmup_batches``); the bytes autograd
saves for backward in one training forward of each variant (distinct storages, full storage size, parameters not
counted) per clip; the val top-1 with ``test_crops`` x ``test_clips`` views (softmax per view, then mean), also with
one backbone pass per chunk of views for all variants. From those: shared cost per batch (data + one backbone pass
+ the variants' steps) against separate runs (N x (data + backbone) + the steps), and, with ``timing.check``, a
real measurement of the same comparison.

Outputs in DIR: ``ablation.md`` (the table and the saving), ``results.json``, ``ablation.log``, and per variant
``DIR/<name>/checkpoint.pt`` (this toolkit's checkpoint format: trainable weights, optimizer, scheduler and RNG
state, backbone identity, config; ``test.py --weights DIR/<name>/checkpoint.pt`` tests it, ``train.py --resume`` can
continue it), ``config.yaml`` (the variant's full training config), ``metrics.jsonl`` and the test scores
``scores_<frames>x<crops>x<clips>.npz`` (test.py's format: ``tools.fuse_scores`` reads them). A variant trained here
matches ``train.py`` on its config.yaml (the same batches, initialisation and updates; bit-identical in fp32 on the
CPU without dropout).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import difflib
import os
import platform
import random
import re
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..cli import run_command
from ..config.loader import read_yaml_mapping
from ..config.schema import Key
from ..config.types import Choice, Int, ListOf, MappingOf, Optional, Raw, Str
from ..config.types import Path as PathType
from ..data.transforms import TEST_CROP_CHOICES
from ..engine.memory import SavedTensorMeter
from ..errors import ConfigError, TrainingError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


# The ablation file's own schema (checked by the config package's check_mapping: types, defaults, closest-name hints)
ABLATION_SCHEMA = {
    "base": Key(None, "the training config every variant starts from (required)", Optional(PathType())),
    "output": Key(None, "the default of --out", Optional(PathType())),
    "report": Key(None, "also write the report there", Optional(PathType())),
    # (Str, not Optional: a variant may be named "none")
    "reference": Key(None, "step times are divided by this variant's (default: the first)", Str(True)),
    "budget": {
        "epochs": Key(None, "solver.epochs of every variant (default: the base's)", Optional(Int(min=1))),
        "val_every": Key(0, "1-view validation every N epochs (0: only the final test)", Int(min=0)),
        "test_crops": Key(3, "final test: spatial crops per clip", Choice(TEST_CROP_CHOICES)),
        "test_clips": Key(2, "final test: temporal clips per video", Int(min=1)),
    },
    "timing": {
        "warmup_batches": Key(2, "first batches left out of the time medians", Int(min=0)),
        "check": Key([], "variants trained again, side by side and then each alone",
                     Optional(ListOf(Str(True)))),
        "check_epochs": Key(1, "epochs of that real measurement", Int(min=1)),
    },
    "variants": Key(None, "the variants (checked one by one with VARIANT_SCHEMA)", Raw()),
}
VARIANT_SCHEMA = {
    "name": Key(None, "letters, digits, '_', '-', '.'; names DIR/<name>/", Raw()),
    "label": Key(None, "module(s) text for the table (default: described from the config)", Optional(Str())),
    "network": Key({}, "overrides of the network section", MappingOf(Raw())),
    "config": Key(None, "a config file whose network section is used (its backbone keys excepted)",
                  Optional(PathType())),
    "solver": Key({}, "training-plugin keys only (VARIANT_SOLVER_KEYS)", MappingOf(Raw())),
}
# Solver keys a variant may set: they choose training plugins. Everything else of the solver is shared.
VARIANT_SOLVER_KEYS = ("plugins", "mixup", "cutmix", "mix_prob", "mix_switch_prob")
# Network keys that choose the frozen backbone: one backbone serves every variant.
BACKBONE_KEYS = ("arch", "pretrained", "pretrained_dir", "quick_gelu", "backbone_precision")
MAX_VIEWS_PER_FORWARD = 64      # clips per backbone + model pass at test time (test.py's default --max_views)


# -- the ablation file ---------------------------------------------------------------------------------------------
@dataclass
class VariantSpec:
    name: str
    cfg: Any                      # the variant's full, validated training config (a DotMap)
    label: str | None = None      # module(s) text for the table (default: described from the config)
    source: str | None = None     # the variant config file, if any


@dataclass
class AblationSpec:
    path: Path
    base_path: Path
    base_cfg: Any
    variants: list[VariantSpec]
    reference: str
    epochs: int
    val_every: int = 0
    test_crops: int = 3
    test_clips: int = 2
    warmup_batches: int = 2
    check: list[str] = field(default_factory=list)
    check_epochs: int = 1
    output: Path | None = None
    report: Path | None = None

    def variant(self, name: str) -> VariantSpec:
        return next(v for v in self.variants if v.name == name)


def _hint(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"


def _resolve_path(value: Any, relative_to: Path, where: str, must_exist: bool = True) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{where} must be a path, got {value!r}")
    path = Path(value)
    if path.is_absolute() or not must_exist:
        candidates = [path]
    else:
        candidates = [path, relative_to / path]
    for candidate in candidates:
        if candidate.exists() or not must_exist:
            return candidate
    raise ConfigError(f"{where}: file not found: {value} (looked in the working directory and in {relative_to})")


def load_ablation(path: str | Path, opts: Sequence[str] | None = None,
                  only: Sequence[str] | None = None) -> AblationSpec:
    """Read and check an ablation YAML; every variant's config is loaded and validated with ``load_config``.

    ``opts`` (``key=value``) override the base config for every variant (a variant's own keys still win);
    ``only`` keeps these variants. Raises :class:`ConfigError` (one line) for anything that cannot run.
    """
    from ..config import check_mapping, load_config, parse_overrides
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ablation config not found: {path}")
    where = str(path)
    raw = check_mapping(read_yaml_mapping(path), ABLATION_SCHEMA, where)
    if raw["base"] is None:
        raise ConfigError(f"{where}: 'base' (a training config, e.g. configs/toy/toy_side4video.yaml) is required")
    here = path.parent
    base_path = _resolve_path(raw["base"], here, f"{where}: base")
    base_opts = parse_overrides(opts)
    base_cfg = load_config(base_path, base_opts)
    budget, timing = raw["budget"], raw["timing"]
    epochs = budget["epochs"] or int(base_cfg.solver.epochs)
    check = timing["check"] or []

    entries = raw["variants"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: 'variants' must be a non-empty list of {{name: ..., network: {{...}}}}")
    variants: list[VariantSpec] = []
    for number, entry in enumerate(entries):
        spot = f"{where}: variants[{number}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{spot} must be a mapping with 'name' and 'network' or 'config', got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise ConfigError(f"{spot}: 'name' must be letters, digits, '_', '-' or '.', got {name!r}")
        spot = f"{where}: variant '{name}'"
        entry = check_mapping(entry, VARIANT_SCHEMA, spot)
        if any(v.name == name for v in variants):
            raise ConfigError(f"{spot}: the name is used twice")
        overrides: dict[str, Any] = dict(base_opts)
        source = None
        if entry["config"] is not None:
            variant_path = _resolve_path(entry["config"], here, f"{spot}: config")
            network = read_yaml_mapping(variant_path).get("network")
            if not isinstance(network, Mapping) or not network:
                raise ConfigError(f"{variant_path}: has no network section (a mapping) to use for variant '{name}'")
            # its network section, the backbone excepted: the base's backbone serves every variant
            overrides.update({f"network.{k}": v for k, v in network.items() if k not in BACKBONE_KEYS})
            load_config(base_path, overrides, overrides_source=f"{variant_path} (network section)")
            source = str(variant_path)
        overrides.update({f"network.{k}": v for k, v in entry["network"].items()})
        for key in entry["solver"]:
            if key not in VARIANT_SOLVER_KEYS:
                raise ConfigError(f"{spot}: solver.{key} cannot differ between variants (same solver and budget for "
                                  f"all); a variant may set only {', '.join(VARIANT_SOLVER_KEYS)}")
        overrides.update({f"solver.{k}": v for k, v in entry["solver"].items()})
        overrides["solver.epochs"] = epochs
        cfg = load_config(base_path, overrides, overrides_source=spot)
        for key in BACKBONE_KEYS:
            if cfg.network[key] != base_cfg.network[key]:
                raise ConfigError(f"{spot}: network.{key} is {cfg.network[key]!r}, the base's "
                                  f"{base_cfg.network[key]!r}; the variants share one frozen backbone (run another "
                                  f"ablation for another backbone)")
        assembler = cfg.network.assembler
        if assembler and dict(assembler).get("type", "tap") != "tap":
            raise ConfigError(f"{spot}: network.assembler {{type: {assembler['type']}}} needs other frames and another "
                              f"sampler than the shared loader; train this variant with train.py")
        variants.append(VariantSpec(name=name, cfg=cfg, label=entry["label"], source=source))

    names = [v.name for v in variants]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only: no variant named {unknown[0]!r}{_hint(unknown[0], names)}")
        variants = [v for v in variants if v.name in only]
        names = [v.name for v in variants]
        check = [c for c in check if c in names]
    reference = raw["reference"] or names[0]
    if reference not in names:
        if only:
            reference = names[0]
        else:
            raise ConfigError(f"{where}: reference '{reference}' is not a variant{_hint(reference, names)}")
    for name in check:
        if name not in names:
            raise ConfigError(f"{where}: timing.check names '{name}', which is not a variant{_hint(name, names)}")
    output = _resolve_path(raw["output"], here, f"{where}: output", must_exist=False) if raw["output"] else None
    report = _resolve_path(raw["report"], here, f"{where}: report", must_exist=False) if raw["report"] else None
    return AblationSpec(path=path, base_path=base_path, base_cfg=base_cfg, variants=variants, reference=reference,
                        epochs=epochs, val_every=budget["val_every"], test_crops=budget["test_crops"],
                        test_clips=budget["test_clips"], warmup_batches=timing["warmup_batches"],
                        check=list(dict.fromkeys(check)), check_epochs=timing["check_epochs"], output=output,
                        report=report)


# -- describing a variant ------------------------------------------------------------------------------------------
def describe_modules(cfg) -> str:
    """The side modules a config builds, e.g. ``conv``, ``tsm(online=True)``, ``tsm + gc`` (non-default arguments
    in parentheses)."""
    import inspect
    from ..modules import SIDE_MODULES
    net = cfg.network
    if net.head != "side4video":
        return f"{net.head} head (no side network)"
    parts = []
    specs = ([{"type": net.temporal_module}] if net.temporal_module != "none" else []) + \
        [dict(m) for m in net.side_modules]
    for spec in specs:
        module_class = SIDE_MODULES[spec["type"]]
        defaults = {name: p.default for name, p in inspect.signature(module_class.__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        shown = []
        slot, blocks = spec.get("slot", module_class.default_slot), spec.get("blocks", module_class.default_blocks)
        if slot != "pre_attn":
            shown.append(str(slot))
        if blocks != "all":
            shown.append(f"blocks={blocks}")
        shown += [f"{k}={v}" for k, v in spec.items()
                  if k not in ("type", "slot", "blocks") and k in defaults and v != defaults[k]]
        parts.append(spec["type"] + (f"({', '.join(shown)})" if shown else ""))
    return " + ".join(parts) if parts else "none (no temporal module)"


# -- per-variant state ---------------------------------------------------------------------------------------------
class RngState:
    """The global RNG streams (torch CPU and current CUDA device, NumPy, Python): captured, restored, swapped."""

    def __init__(self, device: torch.device):
        self.device = device
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        self.numpy = np.random.get_state()
        self.python = random.getstate()

    def restore(self) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


def _plugin_changes_inputs(plugin) -> bool:
    from ..engine.plugins import TrainPlugin
    kind = type(plugin)
    return kind.on_batch is not TrainPlugin.on_batch or kind.on_inputs is not TrainPlugin.on_inputs


def select_inputs(taps, frames: torch.Tensor, layers: Sequence[int], embedding: bool):
    """A model's :class:`SideInputs` from a tap of a superset of its layers (no copy: the same tensors)."""
    from ..models import SideInputs
    index = [taps.layers.index(layer) for layer in layers]
    return SideInputs(frames, [taps.cls_tokens[i] for i in index], [taps.patch_tokens[i] for i in index],
                      list(layers), taps.embedding if embedding else None, frames.shape[1])


class VariantRun:
    """One variant under training: model, plugins, optimizer, schedule and RNG stream, all its own."""

    def __init__(self, spec: VariantSpec, backbone, device: torch.device, steps_per_epoch: int):
        from ..engine.builders import model_from_config
        from ..engine.optim import build_optimizer, build_scheduler
        from ..engine.plugins import PluginContext, build_plugins, set_up_plugins
        from ..models import TapAssembler, count_parameters
        cfg = spec.cfg
        self.spec, self.name, self.cfg = spec, spec.name, cfg
        self.backbone, self.device = backbone, device
        outside = RngState(device)
        model = model_from_config(cfg, backbone, seed=int(cfg.seed)).to(device)   # seeds torch as train.py does
        self.plugins = build_plugins(cfg)
        context = PluginContext(cfg=cfg, model=model, backbone=backbone, assembler=TapAssembler(),
                                num_classes=int(cfg.data.num_classes), device=device)
        self.trainable, lr_mult = set_up_plugins(self.plugins, context, cfg.solver.lr_mult)
        if cfg.network.compile:
            model.compile()
        self.optimizer = build_optimizer(self.trainable, cfg.solver, lr_mult=lr_mult, prefix="model.")
        self.scheduler = build_scheduler(self.optimizer, cfg.solver, steps_per_epoch)
        precision = cfg.solver.precision
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.accumulation = int(cfg.solver.grad_accumulation_steps)
        self.clip = float(cfg.solver.clip_gradient or 0.0)
        self.smoothing = float(cfg.solver.smoothing)
        self.layers = list(model.backbone_layers)
        self.needs_embedding = bool(model.needs_embedding)
        self.own_pass = any(_plugin_changes_inputs(p) for p in self.plugins)
        self.params = count_parameters(model)
        self.plugin_params = count_parameters(self.trainable.parts)   # trained, but not part of the model tested
        np.random.seed(int(cfg.seed))          # NumPy / Python streams (mixup draws) seeded too: reproducible
        random.seed(int(cfg.seed))
        self.rng = RngState(device)            # this variant's stream, from right after its seeded init
        outside.restore()
        self.micro_steps = self.optimizer_steps = 0
        self.saved_bytes_per_clip: float | None = None
        self.pending: list[tuple[dict, torch.Tensor]] = []
        self.epoch_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.diverged: str | None = None
        self.eval_metrics: dict[str, Any] | None = None

    @property
    def model(self) -> nn.Module:
        return self.trainable.model

    @contextlib.contextmanager
    def own_rng(self):
        """Run with this variant's RNG streams: variants never draw from one another's (dropout, drop-path, mixup)."""
        outside = RngState(self.device)
        self.rng.restore()
        try:
            yield
        finally:
            self.rng = RngState(self.device)
            outside.restore()

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, frames: torch.Tensor, labels: torch.Tensor, taps, *, measure: bool = False) -> torch.Tensor:
        """Forward, loss, backward and (at an accumulation boundary) the optimizer step; returns the loss (on the
        device). ``taps``: the shared backbone pass (None for a variant with its own pass)."""
        from ..engine.plugins import TrainBatch, classification_loss
        from ..models import SideInputs
        self.trainable.train()
        if self.own_pass:   # plugins may change pixels in place: give them copies
            batch = TrainBatch(frames=frames.clone(), labels=labels.clone(), targets=labels.clone())
            for plugin in self.plugins:
                batch = plugin.on_batch(batch)
            own = self.backbone.tap(batch.frames, layers=self.layers, embedding=self.needs_embedding)
            inputs = SideInputs(batch.frames, own.cls_tokens, own.patch_tokens, own.layers, own.embedding,
                                batch.frames.shape[1])
            for plugin in self.plugins:
                inputs = plugin.on_inputs(inputs, batch)
        else:
            batch = TrainBatch(frames=frames, labels=labels, targets=labels)
            inputs = select_inputs(taps, frames, self.layers, self.needs_embedding)
        meter = None
        if measure:
            meter = SavedTensorMeter.excluding(self.trainable)
        hooks = meter.hooks() if meter is not None else contextlib.nullcontext()
        with hooks, self._autocast():
            logits = self.trainable(inputs)
            total = classification_loss(logits, batch.targets, self.smoothing)
            for plugin in self.plugins:
                for term in plugin.loss(logits, inputs, batch, self.model).values():
                    total = total + term
        if meter is not None:
            self.saved_bytes_per_clip = meter.bytes / frames.shape[0]
        self.scaler.scale(total / self.accumulation).backward()
        self.micro_steps += 1
        if self.micro_steps % self.accumulation == 0:
            if self.clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), self.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            self.optimizer_steps += 1
            for plugin in self.plugins:
                plugin.after_step(self.optimizer_steps, self.model)
        return total.detach()

    def eval_model(self) -> nn.Module:
        """The model validated: a plugin's (e.g. the EMA copy) if one provides it, as the trainer does."""
        from ..engine.plugins import validation_model
        return validation_model(self.model, self.plugins)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def flush(self) -> None:
        """Read the pending losses (one synchronisation); a non-finite one stops this variant (the others go on)."""
        if not self.pending:
            return
        values = torch.stack([loss.float() for _, loss in self.pending]).tolist()
        for (row, _), value in zip(self.pending, values):
            if not np.isfinite(value):
                self.diverged = f"loss {value} at epoch {row['epoch']}, step {row['step']}"
                break
        self.epoch_losses.extend(v for v in values if np.isfinite(v))
        self.pending = []


# -- the shared loops ----------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def union_request(runs: Sequence[VariantRun]) -> tuple[list[int], bool]:
    """Layers and embedding flag of the one backbone pass that serves every variant of ``runs`` that shares it."""
    sharing = [r for r in runs if not r.own_pass]
    layers = sorted({layer for r in sharing for layer in r.layers})
    return layers, any(r.needs_embedding for r in sharing)


@dataclass
class LoopTimes:
    """Seconds per batch of one training loop (all batches; medians skip the warm-up)."""
    load: list[float] = field(default_factory=list)
    backbone: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    wall: float = 0.0
    batches: int = 0
    backbone_passes: int = 0

    def median(self, values: list[float], warmup: int) -> float:
        kept = values[warmup:] if len(values) > warmup else values
        return statistics.median(kept) if kept else 0.0


class Ablation:
    """Builds the shared pieces (backbone, loaders) once and trains/evaluates groups of variants on them."""

    def __init__(self, spec: AblationSpec, out_dir: Path, log):
        from ..backbones import backbone_identity
        from ..data import TrainSampler, build_dataset, build_loader, collate_train, loader_options
        from ..engine.builders import backbone_from_config
        from ._common import default_device
        self.spec, self.out_dir, self.log = spec, out_dir, log
        cfg = spec.base_cfg
        self.cfg = cfg
        self.device = default_device()
        self.backbone = backbone_from_config(cfg, self.device)
        self.identity = backbone_identity(self.backbone)
        self.train_set = build_dataset(cfg.data, "train", seed=int(cfg.seed))
        self.sampler = TrainSampler(len(self.train_set), num_replicas=1, rank=0, seed=int(cfg.seed), shuffle=True,
                                    drop_last=True)
        options = loader_options(cfg.data, device_type=self.device.type)
        self.loader = build_loader(self.train_set, batch_size=int(cfg.data.batch_size), sampler=self.sampler,
                                   collate_fn=collate_train, drop_last=True, **options)
        accumulation = {int(v.cfg.solver.grad_accumulation_steps) for v in spec.variants}
        if len(accumulation) != 1:      # cannot happen (solver is shared), but the schedule depends on it
            raise ConfigError("every variant must use the same solver.grad_accumulation_steps")
        self.accumulation = accumulation.pop()
        batches = len(self.train_set) // int(cfg.data.batch_size)
        self.batches_per_epoch = batches // self.accumulation * self.accumulation
        if self.batches_per_epoch == 0:
            from ..errors import DataError
            raise DataError(f"{cfg.data.train_list}: {len(self.train_set)} videos are fewer than one optimizer step "
                            f"({cfg.data.batch_size} x {self.accumulation} accumulation)")
        self.steps_per_epoch = self.batches_per_epoch // self.accumulation
        self.val_loader = None
        self.test_set = None
        self.test_loader = None
        self.eval_backbone_passes = 0

    def new_runs(self, names: Sequence[str]) -> list[VariantRun]:
        return [VariantRun(self.spec.variant(n), self.backbone, self.device, self.steps_per_epoch) for n in names]

    def train(self, runs: list[VariantRun], epochs: int, *, desc: str = "", validate_every: int = 0,
              measure_bytes: bool = False, on_epoch_end=None) -> LoopTimes:
        """``epochs`` epochs of ``runs`` side by side: one loader, one backbone pass per batch for all variants that
        share it; each variant its own forward, backward and step (timed)."""
        from ..data import BadSampleTracker, normalize_frames
        cfg, device = self.cfg, self.device
        times = LoopTimes(steps={r.name: [] for r in runs})
        layers, embedding = union_request(runs)
        any_shared = any(not r.own_pass for r in runs)
        print_every = int(cfg.logging.print_freq)
        start = time.perf_counter()
        for epoch in range(epochs):
            self.train_set.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            tracker = BadSampleTracker()
            for run in runs:
                run.epoch_losses = []
            progress = None
            if cfg.logging.progress:
                from ..engine.logging_utils import progress_bar
                progress = progress_bar(interval=cfg.logging.progress_interval, total=self.batches_per_epoch,
                                        desc=f"{desc}epoch {epoch}", leave=False)
            batches = iter(self.loader)
            epoch_start = time.perf_counter()
            for index in range(self.batches_per_epoch):
                t0 = time.perf_counter()
                batch = next(batches)
                tracker.add(batch["errors"], batch["num_samples"])
                frames = normalize_frames(batch["frames"].to(device, non_blocking=True), cfg.data.mean, cfg.data.std)
                labels = batch["label"].to(device, non_blocking=True)
                _sync(device)
                t1 = time.perf_counter()
                taps = None
                if any_shared:
                    taps = self.backbone.tap(frames, layers=layers, embedding=embedding)
                    times.backbone_passes += 1
                _sync(device)
                t2 = time.perf_counter()
                times.load.append(t1 - t0)
                times.backbone.append(t2 - t1)
                shift = index % len(runs)       # rotate the order: no variant always runs first after the pass
                for run in runs[shift:] + runs[:shift]:
                    if run.diverged:
                        continue
                    measure = measure_bytes and run.saved_bytes_per_clip is None
                    row = {"epoch": epoch, "step": index, "lr": run.lr()}
                    begin = time.perf_counter()
                    with run.own_rng():
                        loss = run.train_step(frames, labels, taps, measure=measure)
                    _sync(device)
                    if not measure:     # the hooked step is slower: not timed
                        times.steps[run.name].append(time.perf_counter() - begin)
                    run.pending.append((row, loss))
                    if len(run.pending) >= print_every or index + 1 == self.batches_per_epoch:
                        run.flush()
                        if run.diverged:
                            self.log.warning(f"{run.name}: {run.diverged}; it is stopped, the others go on")
                del taps
                times.batches += 1
                if progress is not None:
                    reference = next((r for r in runs if r.epoch_losses and not r.diverged), None)
                    postfix = {"s/batch": f"{(time.perf_counter() - epoch_start) / (index + 1):.2f}"}
                    if reference is not None:
                        postfix[f"loss({reference.name})"] = f"{reference.epoch_losses[-1]:.3f}"
                    progress.set_postfix(postfix, refresh=False)
                    progress.update(1)
            if progress is not None:
                progress.close()
            tracker.check(float(cfg.data.max_bad_fraction))
            epoch_time = time.perf_counter() - epoch_start
            val = None
            if validate_every and (epoch + 1) % validate_every == 0 and epoch + 1 < epochs:
                val = self.validate([r for r in runs if not r.diverged], f"val {epoch}")
            for run in runs:
                row = {"epoch": epoch, "train_loss": float(np.mean(run.epoch_losses)) if run.epoch_losses else None,
                       "lr": run.lr(), "epoch_time_s": epoch_time, "diverged": run.diverged}
                if val is not None and run.name in val:
                    row["val_top1"] = val[run.name]
                run.history.append(row)
            if on_epoch_end is not None:
                on_epoch_end(epoch, runs)
        times.wall = time.perf_counter() - start
        return times

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _eval_loader(self, split: str):
        from ..data import ShardedEvalSampler, build_dataset, build_loader, collate_eval, loader_options
        cfg = self.cfg
        if split == "val":
            dataset = build_dataset(cfg.data, "val", seed=int(cfg.seed))
        else:
            dataset = build_dataset(cfg.data, "test", test_crops=self.spec.test_crops,
                                    test_clips=self.spec.test_clips, seed=int(cfg.seed))
        options = loader_options(cfg.data, device_type=self.device.type, persistent_workers=False)
        loader = build_loader(dataset, batch_size=int(cfg.data.batch_size),
                              sampler=ShardedEvalSampler(len(dataset), 1, 0), collate_fn=collate_eval, **options)
        return dataset, loader

    def validate(self, runs: list[VariantRun], desc: str) -> dict[str, float]:
        """1-view val top-1 of every variant (one backbone pass per batch)."""
        if self.val_loader is None:
            self.val_set, self.val_loader = self._eval_loader("val")
        scores = shared_scores(self.backbone, {r.name: r.eval_model() for r in runs}, self.val_loader, self.device,
                               cfg=self.cfg, flip_permutation=None, progress=bool(self.cfg.logging.progress),
                               desc=desc, counter=self)
        top1 = {name: s.metrics(int(self.cfg.data.num_classes))["top1"] for name, s in scores.items()}
        self.log.info(f"{desc}: " + "  ".join(f"{n} {v:.1f}" for n, v in top1.items()))
        return top1

    def test(self, runs: list[VariantRun]) -> dict[str, dict[str, Any]]:
        """``test_crops`` x ``test_clips`` views of the val list, softmax per view then mean, all variants on one
        backbone pass per chunk of views."""
        if self.test_loader is None:
            self.test_set, self.test_loader = self._eval_loader("test")
        scores = shared_scores(self.backbone, {r.name: r.eval_model() for r in runs}, self.test_loader, self.device,
                               cfg=self.cfg, flip_permutation=self.test_set.flip_permutation(),
                               progress=bool(self.cfg.logging.progress), desc="test", counter=self)
        self.test_scores = scores
        out = {}
        for name, score in scores.items():
            metrics = score.metrics(int(self.cfg.data.num_classes))
            out[name] = {"top1": metrics["top1"], "top5": metrics["top5"], "mean_class_acc": metrics["mean_class_acc"],
                         "num_videos": int(len(score.labels)), "num_views": int(score.num_views),
                         "unreadable": len(score.unreadable)}
        return out


@torch.no_grad()
def shared_scores(backbone, models: Mapping[str, nn.Module], loader, device: torch.device, *, cfg,
                  flip_permutation: torch.Tensor | None = None, progress: bool = False, desc: str = "eval",
                  max_views_per_forward: int = MAX_VIEWS_PER_FORWARD, counter=None) -> dict:
    """``engine.evaluator.collect_scores`` for several models at once (the same loop: ``score_views``): per batch
    the views are flattened, split into chunks of ``max_views_per_forward`` clips (as test.py does), and each chunk
    is tapped ONCE for the union of the models' layers; every model scores it. Returns name → ScoreSet."""
    from ..engine.evaluator import score_views
    layers = sorted({layer for m in models.values() for layer in m.backbone_layers})
    embedding = any(bool(m.needs_embedding) for m in models.values())

    def forward(frames: torch.Tensor, mask) -> dict[str, torch.Tensor]:
        b, v = frames.shape[:2]
        clips = frames.flatten(0, 1)
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in models}
        for start in range(0, clips.shape[0], max_views_per_forward):
            part = clips[start:start + max_views_per_forward]
            taps = backbone.tap(part, layers=layers, embedding=embedding)
            if counter is not None:
                counter.eval_backbone_passes += 1
            for name, model in models.items():
                inputs = select_inputs(taps, part, model.backbone_layers, bool(model.needs_embedding))
                chunks[name].append(model(inputs))
        return {name: torch.cat(chunks[name]).reshape(b, v, -1) for name in models}

    was_training = {name: m.training for name, m in models.items()}
    for model in models.values():
        model.eval()
    try:
        return score_views(loader, device, forward, list(models), mean=cfg.data.mean, std=cfg.data.std,
                           precision=cfg.solver.precision, progress=progress, desc=desc,
                           flip_permutation=flip_permutation, progress_interval=float(cfg.logging.progress_interval),
                           num_classes=int(cfg.data.num_classes))
    finally:
        for name, model in models.items():
            model.train(was_training[name])


# -- checkpoints ---------------------------------------------------------------------------------------------------
def save_variant(run: VariantRun, folder: Path, identity: dict, *, epoch: int, metrics: dict | None = None) -> Path:
    """``folder/checkpoint.pt`` in the trainer's checkpoint format (test.py tests it; train.py can resume it) and
    ``folder/config.yaml``."""
    from ..config import dump_config, to_plain_dict
    from ..engine.checkpoint import FORMAT, atomic_save, capture_rng_state, weights_state
    folder.mkdir(parents=True, exist_ok=True)
    outside = RngState(run.device)
    run.rng.restore()
    rng = capture_rng_state()
    outside.restore()
    cfg = run.cfg
    global_step = run.micro_steps
    state = {
        "format": FORMAT, "epoch": epoch, "step_in_epoch": 0, "global_step": global_step,
        "best_top1": float((metrics or {}).get("top1", -1.0)),
        "epoch_totals": {"loss_sum": 0.0, "loss_count": 0, "clips": 0},
        "world_size": 1, "zero_stage": 0,
        **weights_state(run.model, run.eval_model(), run.trainable.parts, run.plugins),
        "optimizer": [run.optimizer.state_dict()], "scheduler": run.scheduler.state_dict(), "rng": [rng],
        "engine_counters": {"micro_steps": run.micro_steps, "global_steps": run.optimizer_steps,
                            "global_samples": run.micro_steps * int(cfg.data.batch_size) * int(cfg.data.num_sample)},
        "backbone": identity, "head": cfg.network.head, "num_classes": int(cfg.data.num_classes),
        "config": to_plain_dict(cfg), "metrics": to_plain_dict(metrics or {}),
        "ablation": {"variant": run.name, "trained_with": "side4video.tools.ablation (shared backbone pass)"},
    }
    path = folder / "checkpoint.pt"
    atomic_save(state, path)
    dump_config(cfg, folder / "config.yaml")
    return path


# -- the report ----------------------------------------------------------------------------------------------------
def _mib(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2 ** 20:.2f} MiB" if value >= 2 ** 20 else f"{value / 2 ** 10:.1f} KiB"


def machine_description(device: torch.device) -> str:
    threads = torch.get_num_threads()
    cpu = f"{os.cpu_count()} CPU cores, {threads} torch thread{'s' if threads != 1 else ''}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({cpu}); torch {torch.__version__}"
    return f"CPU only: {cpu} ({platform.processor() or platform.machine()}); torch {torch.__version__}"


def table_rows(results: dict) -> tuple[list[str], list[list[Any]]]:
    reference = results["reference"]
    crops, clips = results["budget"]["test_crops"], results["budget"]["test_clips"]
    frames = results["frames"]
    headers = ["variant", "module(s)", "trainable params", f"val top-1 ({frames}x{crops}x{clips})",
               "saved for backward / clip", f"step time vs {reference}", "step (ms)", "note"]
    rows = []
    for row in results["variants"]:
        top1 = row["top1"]
        rows.append([row["name"], row["modules"], f"{row['params']:,}",
                     "diverged" if row["diverged"] else (f"{top1:.1f}" if top1 is not None else "-"),
                     _mib(row["saved_bytes_per_clip"]),
                     f"{row['relative_step']:.2f}x" if row["relative_step"] is not None else "-",
                     f"{row['step_ms']:.0f}" if row["step_ms"] is not None else "-",
                     "; ".join(filter(None, [
                         f"plugins: {', '.join(row['plugins'])}" if row.get("plugins") else "",
                         f"+{row['plugin_params']:,} plugin params" if row.get("plugin_params") else "",
                         "own backbone pass" if row["own_pass"] else "", row["diverged"] or ""]))])
    return headers, rows


def _curves(results: dict) -> list[str]:
    """A second table: top-5 and the mean training loss of every epoch."""
    from ._common import format_table
    epochs = int(results["budget"]["epochs"])
    rows = []
    for row in results["variants"]:
        losses = {h["epoch"]: h.get("train_loss") for h in row["history"]}
        rows.append([row["name"], "-" if row["top5"] is None else f"{row['top5']:.1f}",
                     " ".join("-" if losses.get(e) is None else f"{losses[e]:.2f}" for e in range(epochs))])
    return [format_table(["variant", "val top-5", f"train loss, epochs 0-{epochs - 1}"], rows), ""]


def format_report(results: dict) -> str:
    from ._common import format_table
    headers, rows = table_rows(results)
    saving = results["saving"]
    budget = results["budget"]
    lines = [
        f"# Ablation: {results['config']}",
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {results['machine']}",
        f"- Date: {results['date']}",
        f"- Base config: `{results['base']}`; every variant: {budget['epochs']} epoch(s) x "
        f"{results['batches_per_epoch']} batches of {results['clips_per_batch']} clips, the same batches in the same "
        f"order with the same augmentation, the same solver ({results['solver']}); models seeded with seed "
        f"{results['seed']}, each variant its own optimizer, schedule and RNG stream.",
        f"- Test: {results['frames']} frames x {budget['test_crops']} crops x {budget['test_clips']} clips of the val "
        f"list ({results['test_videos']} videos), softmax per view then mean. Saved for backward: distinct storages "
        "autograd keeps in one training forward (parameters not counted) / clips in the batch. Step: forward + "
        f"backward + optimizer step, median over {results['timed_batches']} batches (first "
        f"{results['warmup_batches']} left out), in this run.",
        "",
        format_table(headers, rows),
        "",
        *_curves(results),
        "## Shared backbone pass vs separate runs",
        "",
        f"Per batch (medians): data {saving['load_ms']:.0f} ms, one backbone pass {saving['backbone_ms']:.0f} ms "
        f"(layers {saving['layers']}{', + embedding' if saving['embedding'] else ''}), variant steps "
        f"{saving['steps_ms']:.0f} ms in all ({results['num_variants']} variants, "
        f"{saving['sharing']} on the shared pass).",
        "",
        f"- shared: data + 1 backbone pass + steps = **{saving['shared_ms']:.0f} ms** per batch",
        f"- separate runs: {results['num_variants']} x data + {saving['sharing']} x backbone pass + steps = "
        f"**{saving['separate_ms']:.0f} ms** per batch",
        f"- shared / separate = **{saving['ratio']:.2f}** ({100 * (1 - saving['ratio']):.0f}% saved)",
        f"- whole training loop of this run: {saving['train_wall_s']:.0f} s measured; separate runs of the same "
        f"budget, estimated from the per-batch times: {saving['separate_wall_estimate_s']:.0f} s",
    ]
    check = results.get("check")
    if check:
        lines += [
            "",
            f"Real measurement ({', '.join(check['variants'])}: fresh models, {check['epochs']} epoch(s) = "
            f"{check['batches']} batches, training loops only):",
            "",
            f"- side by side on one backbone pass: **{check['shared_s']:.1f} s**",
            f"- separately, each with its own loader and backbone pass: **{check['separate_s']:.1f} s** ("
            + ", ".join(f"{n} {s:.1f} s" for n, s in check["separate_each_s"].items()) + ")",
            f"- shared / separate = **{check['ratio']:.2f}** measured (predicted from the per-batch times: "
            f"{check['predicted_ratio']:.2f})",
            f"- weights after the separate runs identical to those trained side by side: "
            f"{'yes' if check['identical'] else 'NO: ' + ', '.join(check['differs'])}",
        ]
    passes = results["backbone_passes"]
    lines += ["", f"Backbone passes: {passes['train']} for {passes['train_batches']} training batches, "
                  f"{passes['eval']} at test time ({passes['eval_chunks_note']})."]
    return "\n".join(lines) + "\n"


def _command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = f"OMP_NUM_THREADS={threads} " if threads else ""
    return prefix + "python -m side4video.tools.ablation " + " ".join(shlex.quote(a) for a in args)


# -- the whole run -------------------------------------------------------------------------------------------------
def run_ablation(spec: AblationSpec, out_dir: str | Path | None = None, *, report: str | Path | None = None,
                 check: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train every variant of ``spec`` side by side, test them, write checkpoints, ``results.json`` and the report
    (``out_dir/ablation.md``, and ``report`` if given). Returns the results."""
    from ..engine.logging_utils import append_jsonl, dump_json, setup_logging
    from ..engine.checkpoint import atomic_write
    from ..engine.testing import save_scores
    from ..models.assembly import protocol_name
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainingError("the ablation runs in one process (it shares one backbone pass between the variants); "
                            "launch it with python, not torchrun")
    out_dir = Path(out_dir or spec.output or Path("exp") / "ablation" / spec.path.stem)
    log = setup_logging(out_dir, True, "ablation.log")
    ablation = Ablation(spec, out_dir, log)
    names = [v.name for v in spec.variants]
    runs = ablation.new_runs(names)
    layers, embedding = union_request(runs)
    cfg = spec.base_cfg
    log.info(f"ablation {spec.path}: {len(runs)} variants ({', '.join(names)}) on frozen {ablation.backbone.info.arch}"
             f" ({ablation.device.type}); one backbone pass per batch for layers {layers}"
             f"{' + embedding' if embedding else ''}; {spec.epochs} epoch(s) x {ablation.batches_per_epoch} batches;"
             f" output {out_dir}")
    for run in runs:
        (out_dir / run.name).mkdir(parents=True, exist_ok=True)
        (out_dir / run.name / "metrics.jsonl").unlink(missing_ok=True)
        log.info(f"  {run.name}: {describe_modules(run.cfg)}; {run.params:,} trainable parameters"
                 + ("; own backbone pass (its plugins change the inputs)" if run.own_pass else ""))

    def epoch_end(epoch: int, group: list[VariantRun]) -> None:
        for run in group:
            append_jsonl(out_dir / run.name / "metrics.jsonl", run.history[-1])
            if not run.diverged:
                save_variant(run, out_dir / run.name, ablation.identity, epoch=epoch + 1)
        log.info(f"epoch {epoch}: train loss " + "  ".join(
            f"{r.name} {r.history[-1]['train_loss']:.3f}" if r.history[-1]["train_loss"] is not None else f"{r.name} -"
            for r in group))

    times = ablation.train(runs, spec.epochs, validate_every=spec.val_every, measure_bytes=True,
                           on_epoch_end=epoch_end)
    train_passes = times.backbone_passes
    alive = [r for r in runs if not r.diverged]
    log.info(f"testing {len(alive)} variants ({spec.test_crops} crops x {spec.test_clips} clips)")
    ablation.eval_backbone_passes = 0
    tested = ablation.test(alive) if alive else {}
    protocol = protocol_name(int(cfg.data.num_segments) * int(cfg.data.seg_length), spec.test_crops, spec.test_clips)
    for run in alive:
        run.eval_metrics = tested[run.name]
        save_variant(run, out_dir / run.name, ablation.identity, epoch=spec.epochs, metrics=tested[run.name])
        save_scores(out_dir / run.name / f"scores_{protocol}.npz", ablation.test_scores[run.name],
                    ablation.test_set.class_names, protocol, "prob")
        append_jsonl(out_dir / run.name / "metrics.jsonl", {"epoch": spec.epochs - 1, "test": tested[run.name]})

    warm = spec.warmup_batches
    step_ms = {r.name: 1000 * times.median(times.steps[r.name], warm) if times.steps[r.name] else None for r in runs}
    reference_ms = step_ms.get(spec.reference)
    load_ms = 1000 * times.median(times.load, warm)
    backbone_ms = 1000 * times.median(times.backbone, warm)
    steps_total = sum(v for v in step_ms.values() if v is not None)
    sharing = [r for r in runs if not r.own_pass]
    # Separate runs: every variant reads the data; those on the shared pass each run the backbone too (a variant
    # with its own pass has that in its step time already).
    shared_ms = load_ms + (backbone_ms if sharing else 0.0) + steps_total
    separate_ms = len(runs) * load_ms + len(sharing) * backbone_ms + steps_total
    ratio = shared_ms / separate_ms if separate_ms > 0 else 1.0
    results: dict[str, Any] = {
        "config": str(spec.path), "base": str(spec.base_path), "command": command or _command_line(None),
        "machine": machine_description(ablation.device), "date": datetime.date.today().isoformat(),
        "output": str(out_dir), "reference": spec.reference, "num_variants": len(runs),
        "budget": {"epochs": spec.epochs, "val_every": spec.val_every, "test_crops": spec.test_crops,
                   "test_clips": spec.test_clips},
        "solver": f"{cfg.solver.optim}, lr {cfg.solver.lr:g}, {cfg.solver.type}, warm-up {cfg.solver.lr_warmup_step:g} "
                  f"epoch(s), weight decay {cfg.solver.weight_decay:g}, {cfg.solver.precision}",
        "seed": int(cfg.seed), "frames": int(cfg.data.num_segments) * int(cfg.data.seg_length),
        "batches_per_epoch": ablation.batches_per_epoch, "clips_per_batch": int(cfg.data.batch_size) *
        int(cfg.data.num_sample), "warmup_batches": warm, "timed_batches": max(times.batches - warm, 0),
        "test_videos": len(ablation.test_set) if ablation.test_set is not None else 0,
        "variants": [], "backbone_passes": {
            "train": train_passes, "train_batches": times.batches, "eval": ablation.eval_backbone_passes,
            "eval_chunks_note": f"one per chunk of at most {MAX_VIEWS_PER_FORWARD} views, for all variants"},
    }
    for run in runs:
        metrics = run.eval_metrics or {}
        results["variants"].append({
            "name": run.name, "modules": run.spec.label or describe_modules(run.cfg), "params": run.params,
            "top1": metrics.get("top1"), "top5": metrics.get("top5"), "test": metrics or None,
            "saved_bytes_per_clip": run.saved_bytes_per_clip, "step_ms": step_ms[run.name],
            "relative_step": (step_ms[run.name] / reference_ms) if step_ms[run.name] and reference_ms else None,
            "own_pass": run.own_pass, "plugins": [p.name for p in run.plugins], "plugin_params": run.plugin_params,
            "diverged": run.diverged,
            "history": run.history,
            "checkpoint": None if run.diverged else str(out_dir / run.name / "checkpoint.pt"),
            "config_source": run.spec.source,
        })
    results["saving"] = {
        "load_ms": load_ms, "backbone_ms": backbone_ms, "steps_ms": steps_total, "layers": layers,
        "embedding": embedding, "sharing": len(sharing), "shared_ms": shared_ms, "separate_ms": separate_ms,
        "ratio": ratio, "train_wall_s": times.wall,
        "separate_wall_estimate_s": times.wall / ratio if ratio > 0 else None,
    }
    del runs, alive
    if check and spec.check:
        results["check"] = separate_check(ablation, spec, load_ms, backbone_ms, step_ms)
    atomic_write(out_dir / "results.json", lambda h: h.write(dump_json(results).encode()))
    text = format_report(results)
    targets = [out_dir / "ablation.md"] + ([Path(report)] if report else [])
    for target in targets:
        atomic_write(target, lambda h: h.write(text.encode()))
    log.info("\n" + text)
    log.info(f"wrote {', '.join(str(t) for t in targets)}, {out_dir / 'results.json'} and DIR/<variant>/checkpoint.pt")
    return results


def separate_check(ablation: Ablation, spec: AblationSpec, load_ms: float, backbone_ms: float,
                   step_ms: Mapping[str, float | None]) -> dict[str, Any]:
    """Train the ``timing.check`` variants again from scratch for ``check_epochs``: side by side on one backbone pass,
    then each alone (its own loader pass and backbone pass), and compare the wall times and the final weights."""
    log = ablation.log
    names = spec.check
    log.info(f"check: {', '.join(names)} side by side, then each alone, {spec.check_epochs} epoch(s) each")
    shared_runs = ablation.new_runs(names)
    shared = ablation.train(shared_runs, spec.check_epochs, desc="check shared ")
    each: dict[str, float] = {}
    differs = []
    for run_shared in shared_runs:
        (alone,) = ablation.new_runs([run_shared.name])
        loop = ablation.train([alone], spec.check_epochs, desc=f"check {alone.name} ")
        each[alone.name] = loop.wall
        a, b = run_shared.model.state_dict(), alone.model.state_dict()
        if set(a) != set(b) or not all(torch.equal(a[k], b[k]) for k in a):
            differs.append(alone.name)
    separate = sum(each.values())
    steps = sum(step_ms[n] or 0.0 for n in names)
    own = sum(1 for r in shared_runs if r.own_pass)
    sharing = len(names) - own
    predicted_shared = load_ms + (backbone_ms if sharing else 0.0) + steps
    predicted_separate = len(names) * load_ms + sharing * backbone_ms + steps
    result = {"variants": list(names), "epochs": spec.check_epochs, "batches": shared.batches,
              "shared_s": shared.wall, "separate_s": separate, "separate_each_s": each,
              "ratio": shared.wall / separate if separate > 0 else None,
              "predicted_ratio": predicted_shared / predicted_separate if predicted_separate > 0 else None,
              "identical": not differs, "differs": differs}
    log.info(f"check: shared {shared.wall:.1f} s, separate {separate:.1f} s (ratio {result['ratio']:.2f}); weights "
             f"{'identical' if not differs else 'differ for ' + ', '.join(differs)}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m side4video.tools.ablation",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the ablation YAML (base config + variants)")
    parser.add_argument("--out", default=None, help="output folder (default: the ablation YAML's 'output', else "
                                                    "exp/ablation/<name>)")
    parser.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the base config, for every variant (a variant's own keys still win)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run only these variants")
    parser.add_argument("--report", default=None, help="also write the report here (default: the YAML's 'report')")
    parser.add_argument("--no-report", action="store_true", help="write the report only into the output folder")
    parser.add_argument("--no-check", action="store_true", help="skip timing.check (the real separate-run "
                                                                "measurement)")
    args = parser.parse_args(argv)
    command = _command_line(argv)

    def body() -> int:
        spec = load_ablation(args.config, args.opts, args.only)
        report = None if args.no_report else (args.report or spec.report)
        results = run_ablation(spec, args.out, report=report, check=not args.no_check, command=command)
        print(f"done: {results['num_variants']} variants -> {results['output']}/ablation.md")
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
