"""The ablation file: its schema, its loading into one validated training config per variant, and how a variant's
modules are described in the table.

    base: configs/toy/toy_side4video.yaml   # a normal training config (data, solver, logging, default network)
    output: exp/ablation/toy                # default of --out
    report: benchmarks/results/ablation.md  # optional: also write the report there (--report / --no-report)
    reference: conv                         # step times are divided by this variant's (default: the first)
    budget:                                 # the same for every variant
      epochs: 10                            # solver.epochs (default: the base's; --opts solver.epochs=N wins)
      val_every: 0                          # 1-view validation every N epochs (0: only the final test)
      test_crops: 3                         # final test views of the val list: crops x clips
      test_clips: 2
    timing:
      warmup_batches: 2                     # first batches left out of the time medians
      check: [conv, none]                   # real measurement of the saving: these variants trained again, fresh,
      check_epochs: 1                       #   side by side and then each alone (own loader + backbone pass)
    variants:                               # name: letters, digits, '_', '-', '.' (not first); names DIR/<name>/
      - {name: conv}                        # the base's network section as it is
      - {name: none, network: {temporal_module: none}}          # overrides of the network section
      - {name: gc, config: configs/toy/toy_gc.yaml}             # the network section of another config
      - {name: gc_t, config: configs/toy/toy_gc.yaml,           # ... with overrides on top
         network: {side_modules: [{type: gc, calibrators: T}]}}
      - {name: conv_mix, solver: {mixup: 0.8}}                  # plugin keys only: plugins, mixup, cutmix, ...

Relative paths (``base``, a variant's ``config``, ``output``, ``report``) are read from the working directory, or
else from the ablation file's folder. Variant keys are checked by the package's config loader (unknown keys stop
with a one-line hint). The variants share the data, the solver settings and the budget; only the network section
(and training plugins) may differ, and not the backbone.
"""
from __future__ import annotations

import inspect
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import check_mapping, load_config, parse_overrides
from ..config.loader import read_yaml_mapping
from ..config.schema import Key
from ..config.types import Choice, Int, ListOf, MappingOf, Optional, Raw, Str
from ..config.types import Path as PathType
from ..data.transforms import TEST_CROP_CHOICES
from ..errors import ConfigError
from ..modules import SIDE_MODULES
from ..registry import hint
from ..tasks import require_classification

log = logging.getLogger("side4video")

# A variant's name is a folder name inside --out: no separators, and never '.' or '..' (they would write into --out
# itself or its parent).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

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
    "name": Key(None, "letters, digits, '_', '-', '.' (not first); names DIR/<name>/", Raw()),
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
    notes: list[str] = field(default_factory=list)   # what was decided for the user (e.g. which epochs won)

    def variant(self, name: str) -> VariantSpec:
        return next(v for v in self.variants if v.name == name)


def _resolve_path(value: Any, relative_to: Path, where: str, must_exist: bool = True) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{where} must be a path, got {value!r}")
    path = Path(value)
    candidates = [path] if path.is_absolute() or not must_exist else [path, relative_to / path]
    for candidate in candidates:
        if candidate.exists() or not must_exist:
            return candidate
    raise ConfigError(f"{where}: file not found: {value} (looked in the working directory and in {relative_to})")


def load_ablation(path: str | Path, opts: Sequence[str] | None = None,
                  only: Sequence[str] | None = None) -> AblationSpec:
    """Read and check an ablation YAML; every variant's config is loaded and validated with ``load_config``.

    ``opts`` (``key=value``) override the base config for every variant (a variant's own keys still win; an
    explicit ``solver.epochs`` wins over ``budget.epochs``); ``only`` keeps these variants. Raises
    :class:`ConfigError` (one line) for anything that cannot run.
    """
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
    # variants change only network and plugin keys, so the base's task is every variant's: checked once, before
    # any variant is loaded
    require_classification(base_cfg, f"{where}: side4video ablation", f"train {base_path} with train.py")
    budget, timing = raw["budget"], raw["timing"]
    notes: list[str] = []
    if "solver.epochs" in base_opts:
        epochs = int(base_cfg.solver.epochs)
        if budget["epochs"] is not None and budget["epochs"] != epochs:
            notes.append(f"--opts solver.epochs={epochs} wins over the file's budget.epochs {budget['epochs']}")
    else:
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
        if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in (".", ".."):
            raise ConfigError(f"{spot}: 'name' must be letters, digits, '_', '-' or '.' (not first), a folder name "
                              f"inside the output folder, got {name!r}")
        spot = f"{where}: variant '{name}'"
        entry = check_mapping(entry, VARIANT_SCHEMA, spot)
        if any(v.name == name for v in variants):
            raise ConfigError(f"{spot}: the name is used twice")
        variants.append(_variant(entry, name, spot, here, base_path, base_cfg, base_opts, epochs))

    names = [v.name for v in variants]
    if only:
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only: no variant named {unknown[0]!r}{hint(unknown[0], names)}")
        variants = [v for v in variants if v.name in only]
        names = [v.name for v in variants]
        check = [c for c in check if c in names]
    reference = raw["reference"] or names[0]
    if reference not in names:
        if only:
            reference = names[0]
        else:
            raise ConfigError(f"{where}: reference '{reference}' is not a variant{hint(reference, names)}")
    for name in check:
        if name not in names:
            raise ConfigError(f"{where}: timing.check names '{name}', which is not a variant{hint(name, names)}")
    output = _resolve_path(raw["output"], here, f"{where}: output", must_exist=False) if raw["output"] else None
    report = _resolve_path(raw["report"], here, f"{where}: report", must_exist=False) if raw["report"] else None
    return AblationSpec(path=path, base_path=base_path, base_cfg=base_cfg, variants=variants, reference=reference,
                        epochs=epochs, val_every=budget["val_every"], test_crops=budget["test_crops"],
                        test_clips=budget["test_clips"], warmup_batches=timing["warmup_batches"],
                        check=list(dict.fromkeys(check)), check_epochs=timing["check_epochs"], output=output,
                        report=report, notes=notes)


def _variant(entry: Mapping[str, Any], name: str, spot: str, here: Path, base_path: Path, base_cfg,
             base_opts: Mapping[str, Any], epochs: int) -> VariantSpec:
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
    return VariantSpec(name=name, cfg=cfg, label=entry["label"], source=source)


def describe_modules(cfg) -> str:
    """The side modules a config builds, e.g. ``conv``, ``tsm(online=True)``, ``tsm + gc`` (non-default arguments
    in parentheses)."""
    net = cfg.network
    if net.head != "side4video":
        return f"{net.head} head (no side network)"
    parts = []
    specs = ([{"type": net.temporal_module}] if net.temporal_module != "none" else []) + \
        [dict(m) for m in net.side_modules]
    for spec in specs:
        module_class = SIDE_MODULES.get(spec["type"])
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


__all__ = ["NAME_PATTERN", "ABLATION_SCHEMA", "VARIANT_SCHEMA", "VARIANT_SOLVER_KEYS", "BACKBONE_KEYS", "VariantSpec",
           "AblationSpec", "load_ablation", "describe_modules"]
