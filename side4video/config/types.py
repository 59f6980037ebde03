"""Value types of the config schema: each converts a YAML / ``--opts`` value once, or says what it expected.

A type is a small object with ``convert(value) -> value`` (raising :class:`TypeMismatch` with a description
of what was expected) and ``describe() -> str``. The loader turns a mismatch into a ``ConfigError`` that
names the file, the key, the value and the expectation.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import ConfigError

_NONE_STRINGS = ("none", "null", "~", "")


class TypeMismatch(Exception):
    """Raised by a type's ``convert``; the message is what was expected (e.g. 'a positive integer'), or, with
    ``standalone=True``, a complete statement of the problem (e.g. an unknown argument of a side module)."""

    def __init__(self, message: str, standalone: bool = False):
        super().__init__(message)
        self.standalone = standalone


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_STRINGS)


class Type:
    def convert(self, value: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def fail(self) -> TypeMismatch:
        return TypeMismatch(self.describe())


@dataclass(frozen=True)
class Int(Type):
    min: int | None = None
    max: int | None = None

    def convert(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.fail()
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise self.fail() from None
        if isinstance(value, float):
            if not value.is_integer():
                raise self.fail()
            value = int(value)
        if not isinstance(value, int):
            raise self.fail()
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.fail()
        return value

    def describe(self) -> str:
        if self.min == 1 and self.max is None:
            return "a positive integer"
        if self.min == 0 and self.max is None:
            return "a non-negative integer"
        if self.min is not None and self.max is not None:
            return f"an integer in [{self.min}, {self.max}]"
        return "an integer" + (f" >= {self.min}" if self.min is not None else "") + \
            (f" <= {self.max}" if self.max is not None else "")


@dataclass(frozen=True)
class Float(Type):
    min: float | None = None
    max: float | None = None
    min_open: bool = False      # exclude ``min`` itself (e.g. a learning rate must be > 0)
    max_open: bool = False

    def convert(self, value: Any) -> float:
        if isinstance(value, bool):
            raise self.fail()
        if isinstance(value, str):
            try:
                value = float(value.strip())   # YAML 1.1 reads `1e-4` (no dot) as a string
            except ValueError:
                raise self.fail() from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail()
        value = float(value)
        if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
            raise self.fail()
        if self.max is not None and (value > self.max or (self.max_open and value == self.max)):
            raise self.fail()
        return value

    def describe(self) -> str:
        if self.min is None and self.max is None:
            return "a number"
        low = "" if self.min is None else ("(" if self.min_open else "[") + f"{self.min:g}"
        high = "" if self.max is None else f"{self.max:g}" + (")" if self.max_open else "]")
        if self.max is None:
            return f"a number {'>' if self.min_open else '>='} {self.min:g}"
        if self.min is None:
            return f"a number {'<' if self.max_open else '<='} {self.max:g}"
        return f"a number in {low}, {high}"


@dataclass(frozen=True)
class Bool(Type):
    def convert(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "yes", "on")
        raise self.fail()

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Str(Type):
    nonempty: bool = False

    def convert(self, value: Any) -> str:
        if isinstance(value, bool) or isinstance(value, (list, dict)) or value is None:
            raise self.fail()
        value = str(value)
        if self.nonempty and not value.strip():
            raise self.fail()
        return value

    def describe(self) -> str:
        return "a non-empty string" if self.nonempty else "a string"


@dataclass(frozen=True)
class Path(Type):
    """A file or folder path (kept as a string; ``~`` expanded). Existence is checked where it is used."""

    def convert(self, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail()
        return os.path.expanduser(str(value))

    def describe(self) -> str:
        return "a path"


@dataclass(frozen=True)
class Choice(Type):
    """One of a fixed set; ``options`` may be a callable so that choices come from the factories."""
    options: Sequence[Any] | Callable[[], Sequence[Any]]

    def values(self) -> list[Any]:
        return list(self.options() if callable(self.options) else self.options)

    def convert(self, value: Any) -> Any:
        options = self.values()
        if value in options and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            for option in options:   # '3' for an int choice, 'FP32' for 'fp32'
                if str(option).lower() == value.strip().lower():
                    return option
        if isinstance(value, float) and value.is_integer() and int(value) in options:
            return int(value)
        raise self.fail()

    def describe(self) -> str:
        return "one of " + ", ".join(str(o) for o in self.values())


@dataclass(frozen=True)
class Literal(Type):
    """Exactly ``value`` (also written as one of ``spellings``), e.g. ``network.pretrained: false``."""
    value: Any
    spellings: tuple[str, ...] = ()

    def convert(self, value: Any) -> Any:
        if value is self.value or (type(value) is type(self.value) and value == self.value):
            return self.value
        if isinstance(value, str) and value.strip().lower() in self.spellings:
            return self.value
        raise self.fail()

    def describe(self) -> str:
        return repr(self.value).lower() if isinstance(self.value, bool) else repr(self.value)


@dataclass(frozen=True)
class Raw(Type):
    """Any value, kept as it is: for entries that the code using them checks itself (e.g. an ablation's
    variants, each loaded through the config loader)."""

    def convert(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "any value"


@dataclass(frozen=True)
class Optional(Type):
    """``None`` (written ``null``, ``None``, ``none`` or ``~``) or the inner type."""
    inner: Type

    def convert(self, value: Any) -> Any:
        if _is_none(value):
            return None
        return self.inner.convert(value)

    def describe(self) -> str:
        return f"{self.inner.describe()} or null"


@dataclass(frozen=True)
class OneOf(Type):
    """The first of several types that accepts the value."""
    types: tuple[Type, ...]

    def convert(self, value: Any) -> Any:
        for kind in self.types:
            try:
                return kind.convert(value)
            except TypeMismatch:
                continue
        raise self.fail()

    def describe(self) -> str:
        return " or ".join(t.describe() for t in self.types)


@dataclass(frozen=True)
class ListOf(Type):
    inner: Type
    length: int | None = None
    min_length: int = 0
    check: Callable[[list], bool] | None = None     # an extra condition on the whole list
    check_doc: str = ""

    def convert(self, value: Any) -> list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise self.fail()
        if (self.length is not None and len(value) != self.length) or len(value) < self.min_length:
            raise self.fail()
        try:
            converted = [self.inner.convert(item) for item in value]
        except TypeMismatch:
            raise self.fail() from None
        if self.check is not None and not self.check(converted):
            raise self.fail()
        return converted

    def describe(self) -> str:
        count = f"{self.length} " if self.length is not None else ""
        text = f"a list of {count}values, each {self.inner.describe()}"
        return text + (f" ({self.check_doc})" if self.check_doc else "")


@dataclass(frozen=True)
class MappingOf(Type):
    """A mapping of string keys to values of one type (e.g. ``solver.lr_mult: {fc: 10}``)."""
    value: Type

    def convert(self, value: Any) -> dict:
        if _is_none(value):
            return {}
        if not isinstance(value, dict):
            raise self.fail()
        try:
            return {str(k): self.value.convert(v) for k, v in value.items()}
        except TypeMismatch:
            raise self.fail() from None

    def describe(self) -> str:
        if isinstance(self.value, Raw):
            return "a mapping"
        return f"a mapping of names to values, each {self.value.describe()}"


@dataclass(frozen=True)
class Spec(Type):
    """A ``{type: NAME, ...keyword arguments}`` mapping (or a list of them) checked against a registry.

    ``check(entry)`` is the registry's own validator; it raises ``TypeMismatch`` with a precise message
    (unknown name with the closest one, unknown argument with the closest parameter).
    """
    what: str
    check: Callable[[dict], dict]
    many: bool = False
    extra: dict = field(default_factory=dict)

    def convert(self, value: Any) -> Any:
        if self.many:
            if _is_none(value):
                return []
            if isinstance(value, dict):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise self.fail()
            return [self._one(item, index) for index, item in enumerate(value)]
        if _is_none(value):
            return None
        return self._one(value, None)

    def _one(self, item: Any, index: int | None) -> dict:
        where = f"entry {index}: " if index is not None else ""
        if isinstance(item, str):
            item = {"type": item}
        if not isinstance(item, dict) or "type" not in item:
            raise TypeMismatch(f"{where}must be {self.describe_one()}, got {item!r}", standalone=True)
        try:
            return self.check(dict(item))
        except (TypeMismatch, ConfigError) as exc:   # the registries' checks raise one-line ConfigErrors
            raise TypeMismatch(f"{where}{exc}", standalone=True) from None

    def describe_one(self) -> str:
        return f"a mapping {{type: NAME, ...}} naming a {self.what}"

    def describe(self) -> str:
        return ("a list of " if self.many else "") + self.describe_one() + ("s" if self.many else "")
