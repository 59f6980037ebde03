"""Read a YAML config, apply ``--opts`` overrides, validate against the schema, return a DotMap."""
from __future__ import annotations

import copy
import difflib
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from dotmap import DotMap

from .schema import LEGACY_KEYS, SCHEMA, Key


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file and key."""


def _flat_schema(tree: Mapping[str, Any] = SCHEMA, prefix: str = "") -> dict[str, Key]:
    out: dict[str, Key] = {}
    for name, node in tree.items():
        dotted = f"{prefix}{name}"
        if isinstance(node, Key):
            out[dotted] = node
        else:
            out.update(_flat_schema(node, dotted + "."))
    return out


FLAT_SCHEMA = _flat_schema()


def default_config() -> dict[str, Any]:
    """The schema's defaults as a nested plain dict."""
    out: dict[str, Any] = {}
    for dotted, key in FLAT_SCHEMA.items():
        _set(out, dotted, copy.deepcopy(key.default))
    return out


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections → dotted keys; a mapping that is itself a schema value (e.g. solver.lr_mult) stays whole."""
    out: dict[str, Any] = {}
    for name, value in tree.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping) and dotted not in FLAT_SCHEMA:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _normalise_value(dotted: str, value: Any) -> Any:
    # The reference YAMLs write `sim_header: None`; YAML reads it as the string "None".
    if isinstance(value, str) and value.strip() in ("None", "none", "null", "~"):
        return None
    # YAML 1.1 reads `1e-4` (no dot) as a string; numbers are numbers wherever the schema expects one.
    default = FLAT_SCHEMA[dotted].default if dotted in FLAT_SCHEMA else None
    if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if isinstance(default, int) and number.is_integer() else number
    if isinstance(value, float) and isinstance(default, int) and not isinstance(default, bool) and value.is_integer():
        return int(value)
    return value


def _check_key(dotted: str, source: str) -> bool:
    """True if the key is in the schema; warn for legacy keys; raise with a suggestion otherwise."""
    if dotted in FLAT_SCHEMA:
        return True
    if dotted in LEGACY_KEYS:
        warnings.warn(f"{source}: key '{dotted}' has no effect ({LEGACY_KEYS[dotted]}); ignored.", stacklevel=3)
        return False
    leaf = dotted.split(".")[-1]
    # A known key put in the wrong section ('data.lr') is the likeliest mistake; then spelling.
    close = [c for c in FLAT_SCHEMA if c.split(".")[-1] == leaf]
    if not close:
        close = difflib.get_close_matches(dotted, list(FLAT_SCHEMA) + list(LEGACY_KEYS), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"{source}: unknown config key '{dotted}'{hint}")


def _check_value(dotted: str, value: Any, source: str) -> None:
    key = FLAT_SCHEMA[dotted]
    if key.choices is not None and value is not None and value not in key.choices:
        raise ConfigError(f"{source}: '{dotted}' must be one of {list(key.choices)}, got {value!r}")


def parse_overrides(opts: Iterable[str] | None) -> dict[str, Any]:
    """``['solver.lr=1e-4', 'data.flip=false']`` → ``{'solver.lr': 1e-4, 'data.flip': False}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in opts or []:
        if "=" not in item:
            raise ConfigError(f"--opts: expected key=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--opts: cannot parse value of {dotted!r}: {exc}") from exc
        out[dotted.strip()] = value
    return out


def load_config(path: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] | None = None) -> DotMap:
    """Defaults ← YAML file ← overrides, validated. Unknown keys stop with a suggestion; legacy keys warn."""
    merged = default_config()
    source = str(path) if path else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        for dotted, value in _flatten(loaded).items():
            if _check_key(dotted, source):
                value = _normalise_value(dotted, value)
                _check_value(dotted, value, source)
                _set(merged, dotted, value)
    if overrides:
        items = overrides.items() if isinstance(overrides, Mapping) else parse_overrides(overrides).items()
        for dotted, value in items:
            if _check_key(dotted, "--opts"):
                value = _normalise_value(dotted, value)
                _check_value(dotted, value, "--opts")
                _set(merged, dotted, value)
    _resolve_aliases(merged)
    _check_required(merged, source)
    cfg = DotMap(merged, _dynamic=False)
    cfg.config_path = str(path) if path else None
    return cfg


def _resolve_aliases(cfg: dict) -> None:
    net = cfg["network"]
    if net.get("n_emb") is not None and net["n_emb"] != net["side_dim"]:
        # The reference configs carry both; side_dim wins when both are present and differ.
        warnings.warn(f"network.n_emb={net['n_emb']} differs from network.side_dim={net['side_dim']}; using side_dim")


def _check_required(cfg: dict, source: str) -> None:
    if cfg["data"]["num_classes"] is None:
        raise ConfigError(f"{source}: 'data.num_classes' is required")
    if cfg["data"]["rand_erase"]:
        raise ConfigError(f"{source}: 'data.rand_erase: True' is not supported; set it to False")
    for name in ("num_segments", "batch_size", "num_classes", "input_size", "num_sample"):
        value = cfg["data"][name]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: 'data.{name}' must be a positive integer, got {value!r}")


def to_plain_dict(cfg: DotMap) -> dict:
    """The config as plain Python containers (for YAML/JSON dumps and checkpoints)."""
    return cfg.toDict() if isinstance(cfg, DotMap) else dict(cfg)


def dump_config(cfg: DotMap, path: str | Path) -> None:
    data = to_plain_dict(cfg)
    data.pop("config_path", None)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
