"""Read a YAML config, apply ``--opts`` overrides, convert and validate every value once, return a DotMap.

After :func:`load_config` every key of the schema is present with a value of its type; the rest of the
toolkit reads ``cfg.data.batch_size`` and never re-checks or re-defaults it.
"""
from __future__ import annotations

import copy
import difflib
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml
from dotmap import DotMap

from ..errors import ConfigError
from ..modules import check_causal_form
from .schema import LEGACY_KEYS, SCHEMA, Key
from .types import TypeMismatch

log = logging.getLogger("side4video")


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
SECTIONS = tuple(name for name, node in SCHEMA.items() if not isinstance(node, Key))
_WARNED: set[str] = set()


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
        if isinstance(value, Mapping) and dotted not in FLAT_SCHEMA and (prefix or dotted in SECTIONS):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _warn_once(message: str) -> None:
    """Legacy-key notes: once per process, through the package logger (never twice for one config)."""
    if message in _WARNED:
        return
    _WARNED.add(message)
    if log.handlers or logging.getLogger().handlers:
        log.warning(message)
    else:
        print(f"warning: {message}", file=sys.stderr)


def _check_key(dotted: str, source: str, legacy: list[str] | None = None) -> bool:
    """True if the key is in the schema; collect legacy keys in ``legacy``; raise with a suggestion otherwise."""
    if dotted in FLAT_SCHEMA:
        return True
    if dotted in LEGACY_KEYS:
        if legacy is not None:
            legacy.append(dotted)
        return False
    leaf = dotted.split(".")[-1]
    # A known key put in the wrong section ('data.lr') is the likeliest mistake; then spelling.
    close = [c for c in FLAT_SCHEMA if c.split(".")[-1] == leaf]
    if not close:
        close = difflib.get_close_matches(dotted, list(FLAT_SCHEMA) + list(LEGACY_KEYS), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"{source}: unknown config key '{dotted}'{hint}")


def convert_value(dotted: str, value: Any, source: str) -> Any:
    """``value`` converted to the schema type of ``dotted``, or a ConfigError naming source, key, value and type."""
    key = FLAT_SCHEMA[dotted]
    try:
        return key.type.convert(value)
    except TypeMismatch as exc:
        if exc.standalone:
            raise ConfigError(f"{source}: '{dotted}' {exc}") from None
        raise ConfigError(f"{source}: '{dotted}' must be {exc}, got {_shown(value)}") from None


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, str) else f"'{value}'"


def check_mapping(values: Any, table: Mapping[str, Any], where: str, prefix: str = "") -> dict[str, Any]:
    r"""``values`` checked against a small schema of its own (``{name: Key}``, nested mappings for sections: e.g. a
    tool's file format), the way the config is: an unknown key stops with the closest name, every value is
    converted to its type once, missing keys get their defaults. Errors are one-line :class:`ConfigError`\ s that
    start with ``where`` and name the dotted key."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'the top level'}' must be a mapping, got {_shown(values)}")
    for key in values:
        if key not in table:
            close = difflib.get_close_matches(str(key), list(table), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(table)}"
            raise ConfigError(f"{where}: unknown key '{prefix}{key}'{hint}")
    out: dict[str, Any] = {}
    for name, node in table.items():
        if not isinstance(node, Key):
            out[name] = check_mapping(values.get(name), node, where, f"{prefix}{name}.")
            continue
        if name not in values:
            out[name] = copy.deepcopy(node.default)
            continue
        try:
            out[name] = node.type.convert(values[name])
        except TypeMismatch as exc:
            if exc.standalone:
                raise ConfigError(f"{where}: '{prefix}{name}' {exc}") from None
            raise ConfigError(f"{where}: '{prefix}{name}' must be {exc}, got {_shown(values[name])}") from None
    return out


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
            raise ConfigError(f"--opts: cannot parse the value of {dotted!r}: {str(exc).splitlines()[0]}") from None
        out[dotted.strip()] = value
    return out


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping; ``read_yaml_mapping`` turns it into a ConfigError naming the file."""

    def __init__(self, key: str, first_line: int, second_line: int):
        super().__init__(f"duplicate key '{key}' (lines {first_line} and {second_line})")
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that refuses a key given twice in one mapping.

    YAML's own rule keeps the last value silently, so ``lr: 3e-3`` followed later by ``lr: 5.0`` would train with
    5.0. The composed node tree is checked before the document is constructed, so the error can name the dotted
    path of the key and both lines. Keys brought in by a merge (``<<: *anchor``) may be overridden: that is what
    merges are for."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        self._check_unique_keys(node, "", set())
        return self.construct_document(node)

    def _check_unique_keys(self, node: yaml.Node, path: str, visited: set[int]) -> None:
        if id(node) in visited:  # an alias repeats an anchored node (possibly recursively): checked once
            return
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for position, item in enumerate(node.value):
                self._check_unique_keys(item, f"{path}[{position}]", visited)
            return
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._check_unique_keys(value_node, path, visited)
                continue
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):  # a list or mapping as a key: the constructor refuses it
                self._check_unique_keys(value_node, path, visited)
                continue
            # constructed, so that 'lr' and lr (or 1 and 0x1) are the same key, as in the dict YAML would build
            key = self.construct_object(key_node)
            dotted = f"{path}.{key}" if path else str(key)
            if key in seen:
                raise _DuplicateKey(dotted, seen[key], line)
            seen[key] = line
            self._check_unique_keys(value_node, dotted, visited)


def read_yaml_mapping(path: Path, top_level: str = "a mapping") -> Mapping[str, Any]:
    """A YAML file whose top level is a mapping (an empty file: ``{}``); a syntax error or a key given twice in one
    mapping is a one-line ConfigError naming ``file:line`` (or the file, the dotted key and both lines), another top
    level one saying it must be ``top_level``."""
    try:
        loaded = yaml.load(Path(path).read_text(), Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as exc:
        lines = (f"twice on line {exc.first_line}" if exc.first_line == exc.second_line
                 else f"lines {exc.first_line} and {exc.second_line}")
        raise ConfigError(f"{path}: duplicate key '{exc.key}' ({lines}); YAML would silently keep the last value, "
                          "give each key once") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be {top_level}")
    return loaded


def _read_yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return read_yaml_mapping(path, "a mapping of sections (data, network, solver, ...)")


def load_config(path: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] | None = None,
                *, base: Mapping[str, Any] | None = None, overrides_source: str = "--opts") -> DotMap:
    """Defaults ← ``base`` (e.g. a checkpoint's stored config) ← YAML file ← overrides, converted and validated.

    Unknown keys stop with a suggestion; legacy keys are noted once.
    """
    merged = default_config()
    explicit: set[str] = set()
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if base is not None:
        layers.append(("<checkpoint config>", _flatten({k: v for k, v in base.items() if k != "config_path"})))
    source = str(path) if path else "<defaults>"
    if path is not None:
        layers.append((source, _flatten(_read_yaml(Path(path)))))
    if overrides:
        parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
        layers.append((overrides_source, parsed))
    for where, items in layers:
        legacy: list[str] = []
        for dotted, value in items.items():
            quiet = where == "<checkpoint config>"
            if quiet and dotted not in FLAT_SCHEMA:
                continue   # a key of an older version of the schema
            if _check_key(dotted, where, legacy):
                _set(merged, dotted, convert_value(dotted, value, where))
                if not quiet:
                    explicit.add(dotted)
        if legacy:
            _warn_once(f"{where}: {len(legacy)} key(s) of the reference configs have no effect here and are ignored: "
                       f"{', '.join(legacy)} (why: side4video/config/schema.py LEGACY_KEYS)")
    _resolve_aliases(merged, explicit, source)
    _check_combinations(merged, source)
    cfg = DotMap(merged, _dynamic=False)
    cfg.config_path = str(path) if path else None
    return cfg


def config_section(section: str, values: Mapping[str, Any] | None = None, source: str = "<arguments>") -> DotMap:
    """One section (e.g. ``data``) with the schema's defaults, ``values`` converted and checked like a config file's.

    For callers that build one part without a whole config (tests, tools)::

        create_dataset(config_section("data", {"num_classes": 8, "train_list": "train.txt"}), "train")
    """
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; sections: {', '.join(SECTIONS)}")
    defaults = {} if section == "data" else {"data": {"num_classes": 1}}
    cfg = load_config(None, {**_flatten(defaults), **{f"{section}.{k}": v for k, v in (values or {}).items()}},
                      overrides_source=source)
    return cfg[section]


def _resolve_aliases(cfg: dict, explicit: set[str], source: str) -> None:
    net = cfg["network"]
    if net["n_emb"] is not None and net["n_emb"] != net["side_dim"]:
        if "network.side_dim" in explicit:
            # The reference configs carry both; side_dim wins when both are given and differ.
            _warn_once(f"{source}: network.n_emb={net['n_emb']} differs from network.side_dim={net['side_dim']}; "
                       "using side_dim")
        else:
            net["side_dim"] = net["n_emb"]


def _check_combinations(cfg: dict, source: str) -> None:
    data, net, solver = cfg["data"], cfg["network"], cfg["solver"]
    task = cfg.get("task") or {}
    task = task.get("type", "classification") if isinstance(task, dict) else str(task)
    if data["num_classes"] is None and task != "retrieval":   # retrieval ranks captions: no classes
        raise ConfigError(f"{source}: 'data.num_classes' is required")
    if task == "retrieval":
        _check_retrieval(data, source)
    if data["rand_erase"]:
        raise ConfigError(f"{source}: 'data.rand_erase: true' is not supported (random erasing is not implemented); "
                          "set it to false")
    scale = data["scale_size"]
    if scale is not None:
        smallest = scale if isinstance(scale, int) else min(scale)
        if smallest < data["input_size"]:
            raise ConfigError(f"{source}: 'data.scale_size' {scale} is smaller than data.input_size "
                              f"{data['input_size']}; the crop would not fit")
    for name in ("drop_out", "emb_dropout"):
        if net[name]:
            raise ConfigError(f"{source}: 'network.{name}' is {net[name]}, but the backbone is frozen and runs in eval "
                              f"mode, so dropout inside it cannot apply; set it to 0 (use network.drop_fc or "
                              f"network.drop_path for the trainable part)")
    if solver["precision"] == "fp16" and solver["zero_stage"] > 0:
        raise ConfigError(f"{source}: solver.precision fp16 needs solver.zero_stage 0 (DeepSpeed's loss scaler for "
                          "torch autocast); use bf16 with ZeRO 1/2")
    if (solver["mixup"] > 0 or solver["cutmix"] > 0) and any(dict(p).get("type") == "mixup" for p in solver["plugins"]):
        raise ConfigError(f"{source}: solver.mixup ({solver['mixup']}) / solver.cutmix ({solver['cutmix']}) and a "
                          "'mixup' entry in solver.plugins both configure mixup; keep one (set mixup and cutmix to 0, "
                          "or remove the entry)")
    if net["causal"]:
        _check_causal(net, source)
    if data["sampling"] == "dense" and data["seg_length"] != 1:
        raise ConfigError(f"{source}: data.seg_length applies to segment sampling only; use seg_length 1 with "
                          "data.sampling: dense")


def _check_retrieval(data: dict, source: str) -> None:
    """The files a retrieval dataset needs, named in one line per missing key (at load time, before any work)."""
    dataset = str(data["dataset"]).lower()
    needs = {"msrvtt": ("train_csv", "val_csv", "data_path", "features_path"),
             "jsonl": ("train_csv", "val_csv", "features_path")}.get(dataset, ("data_path", "features_path"))
    if dataset not in ("msrvtt", "msvd", "vatex", "didemo", "activitynet", "jsonl"):
        raise ConfigError(f"{source}: task retrieval reads data.dataset msrvtt, msvd, vatex, didemo, activitynet or "
                          f"jsonl, got {data['dataset']!r}")
    missing = [key for key in needs if not data[key]]
    if missing:
        raise ConfigError(f"{source}: task retrieval with data.dataset {dataset} needs "
                          + ", ".join(f"data.{key}" for key in missing))


def _check_causal(net: dict, source: str) -> None:
    if net["head"] != "side4video":
        raise ConfigError(f"{source}: network.causal applies to the side network (network.head: side4video), not to "
                          f"network.head: {net['head']}")
    if net["assembler"]:
        raise ConfigError(f"{source}: network.causal cannot be combined with network.assembler "
                          f"{dict(net['assembler']).get('type')!r} (its pseudo-frames summarise the whole video)")
    names = [net["temporal_module"]] + [dict(entry)["type"] for entry in net["side_modules"]]
    check_causal_form(names, where=f"{source}: network.causal")


def to_plain_dict(cfg: DotMap) -> dict:
    """The config as plain Python containers (dicts, lists, str, int, float, bool, None): what YAML/JSON dumps and
    ``weights_only`` checkpoints accept."""
    return _plain(cfg.toDict() if isinstance(cfg, DotMap) else dict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def dump_config(cfg: DotMap, path: str | Path) -> None:
    data = to_plain_dict(cfg)
    data.pop("config_path", None)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
