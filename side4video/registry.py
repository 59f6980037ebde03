"""One registry type for every part that a config names: heads, side modules, training plugins, clip assemblers,
tasks and dataset preparers.

A registry maps names to classes (or factory functions) of one kind::

    SIDE_MODULES = Registry("side module", base=SideModule)

    @SIDE_MODULES.register("conv")
    class TemporalConv(SideModule): ...

A config entry is ``{type: NAME, ...keyword arguments}``. ``NAME`` is a registered name or, for a class that lives
in a user's own repository, ``package.module:Class`` (imported from the Python path, checked like a registered
class). :meth:`Registry.check` validates an entry when the config loads: an unknown name or argument is a one-line
:class:`~side4video.errors.ConfigError` with the closest name, and argument values are checked against the
constructor's annotations (or its defaults' types), so ``fold_div: abc`` names ``fold_div`` and quotes ``'abc'``.
:meth:`Registry.build` constructs: only *binding* errors (a missing or unknown argument) become a ConfigError; an
exception raised inside a constructor's body is a bug or an input check of its own and keeps its traceback.

This module is a leaf: it imports nothing from the rest of the package except the error types.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")

# Where a user's own class is named: ``package.module:Class``.
IMPORT_SEPARATOR = ":"


@dataclass(frozen=True)
class Range:
    """An argument's allowed interval, attached with ``typing.Annotated``: ``clusters: Annotated[int, Range(1)]``."""
    min: float | None = None
    max: float | None = None

    def describe(self) -> str:
        if self.max is None:
            return f">= {self.min:g}"
        if self.min is None:
            return f"<= {self.max:g}"
        return f"in [{self.min:g}, {self.max:g}]"

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


def closest(name: Any, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (None when nothing is close)."""
    matches = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return matches[0] if matches else None


def hint(name: Any, known: Iterable[str], what: str = "available") -> str:
    """``"; did you mean 'x'?"`` or ``"; available: a, b, c"``."""
    known = list(known)
    near = closest(name, known)
    return f"; did you mean '{near}'?" if near else f"; {what}: {', '.join(known) or 'none'}"


def shown(value: Any) -> str:
    """A value as the user wrote it in YAML (strings quoted)."""
    return f"'{value}'" if isinstance(value, str) else repr(value)


class Registry(Generic[T]):
    """Name → class (or factory) of one kind of part.

    Args:
        kind: what the entries are, for messages (``"side module"``).
        base: every entry must be a subclass of it (None: any callable).
        skip: constructor parameters the caller always supplies (``dim`` of a side module), never from a config.
        name_attribute: when entries carry their own name (a plugin's ``name`` keys its checkpoint state), the
            attribute that must equal the registered name.
    """

    def __init__(self, kind: str, *, base: type | None = None, skip: Iterable[str] = (),
                 name_attribute: str | None = None):
        self.kind = kind
        self.base = base
        self.skip = tuple(skip)
        self.name_attribute = name_attribute
        self._entries: dict[str, Callable[..., T]] = {}

    # -- filling --------------------------------------------------------------------------------------------------
    def register(self, name: str, entry: Callable[..., T] | None = None):
        """``@registry.register("name")`` on a class, or ``registry.register("name", cls)``."""
        def add(item: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not item:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({self._entries[name]} and {item})")
            self._check_entry(name, item, where=f"{self.kind} '{name}'")
            self._entries[name] = item
            return item
        return add if entry is None else add(entry)

    def _check_entry(self, name: str, item: Any, where: str, imported: bool = False) -> None:
        if self.base is not None and not (inspect.isclass(item) and issubclass(item, self.base)):
            raise ConfigError(f"{where}: {_qualified(item)} is not a subclass of {_qualified(self.base)}")
        if self.base is None and not callable(item):
            raise ConfigError(f"{where}: {item!r} is not a class or function")
        if self.name_attribute is not None:
            own = getattr(item, self.name_attribute, None)
            if imported:
                # a user's class names itself; it must not borrow the base's name or another entry's
                inherited = getattr(self.base, self.name_attribute, None)
                taken = own in self._entries and self._entries[own] is not item
                if not isinstance(own, str) or not own or own == inherited or taken:
                    raise ConfigError(f"{where}: set {_qualified(item)}.{self.name_attribute} to a name of its own "
                                      f"(got {own!r}; its checkpoint state is kept under that name)")
            elif own != name:
                raise ConfigError(f"{where}: {_qualified(item)}.{self.name_attribute} is {own!r}, but it is named "
                                  f"'{name}' (its checkpoint state is kept under that name: make them equal)")

    # -- looking up -----------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def get(self, name: str) -> Callable[..., T]:
        """The registered entry, or a user's ``package.module:Class`` imported and checked."""
        if isinstance(name, str) and IMPORT_SEPARATOR in name:
            return self._import(name)
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}'{hint(name, self._entries)} (or name your own class as "
                              f"package.module:Class)")
        return self._entries[name]

    def _import(self, target: str) -> Callable[..., T]:
        module_name, _, attribute = target.partition(IMPORT_SEPARATOR)
        if not module_name or not attribute:
            raise ConfigError(f"{self.kind} '{target}': write a class of your own as package.module:Class")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"{self.kind} '{target}': cannot import {module_name} ({exc}); is its folder on the "
                              "Python path (PYTHONPATH)?") from None
        item: Any = module
        for part in attribute.split("."):
            if not hasattr(item, part):
                available = [n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")]
                raise ConfigError(f"{self.kind} '{target}': {module_name} has no '{attribute}'"
                                  f"{hint(attribute, available, 'its classes')}")
            item = getattr(item, part)
        self._check_entry(target, item, where=f"{self.kind} '{target}'", imported=True)
        return item

    # -- config entries -------------------------------------------------------------------------------------------
    def check(self, entry: Mapping[str, Any], *, reserved: Iterable[str] = ()) -> dict[str, Any]:
        """An entry ``{type: NAME, ...}`` checked: the name resolves, every argument is a parameter of the
        constructor and has a value of its annotated type. Returns the keyword arguments (without ``type`` and the
        ``reserved`` placement keys). Raises a one-line ConfigError (the caller adds where the entry is)."""
        name = entry.get("type")
        item = self.get(name)
        kwargs = {k: v for k, v in entry.items() if k != "type" and k not in tuple(reserved)}
        parameters = self._parameters(item)
        takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(_callable(item)).parameters.values())
        hints = _type_hints(item)
        for key, value in kwargs.items():
            if key not in parameters:
                if takes_any:
                    continue
                raise ConfigError(f"{self.kind} '{name}' has no argument '{key}'"
                                  f"{hint(key, parameters, 'it takes') if parameters else '; it takes no arguments'}")
            expected = hints.get(key, _type_of_default(parameters[key]))
            problem = check_value(value, expected)
            if problem:
                raise ConfigError(f"{self.kind} '{name}': argument '{key}' must be {problem}, got {shown(value)}")
        check_arguments = getattr(item, "check_arguments", None)
        if callable(check_arguments):
            check_arguments(kwargs)      # cross-argument rules of the class itself (raises ConfigError)
        return kwargs

    def _parameters(self, item: Any) -> dict[str, inspect.Parameter]:
        signature = inspect.signature(_callable(item))
        return {p.name: p for p in signature.parameters.values()
                if p.name not in ("self", *self.skip) and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def build(self, entry: Mapping[str, Any] | str, *args: Any, provided: Mapping[str, Any] | None = None,
              reserved: Iterable[str] = ()) -> T:
        """Construct the entry's class with ``args``, its keyword arguments and, for parameters the constructor
        takes that the entry leaves out, ``provided`` ones. A call that cannot bind (a missing or unknown argument)
        is a one-line ConfigError with the closest name; whatever the constructor's body raises propagates."""
        if isinstance(entry, str):
            entry = {"type": entry}
        name = entry.get("type")
        item = self.get(name)
        kwargs = {k: v for k, v in entry.items() if k != "type" and k not in tuple(reserved)}
        signature = inspect.signature(_callable(item))
        for key, value in (provided or {}).items():
            if key in signature.parameters and key not in kwargs:
                kwargs[key] = value
        try:
            signature.bind(*_bound_args(item, args), **kwargs)
        except TypeError as exc:
            unknown = [k for k in kwargs if k not in signature.parameters]
            if unknown and not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
                parameters = self._parameters(item)
                raise ConfigError(f"{self.kind} '{name}' has no argument '{unknown[0]}'"
                                  f"{hint(unknown[0], parameters, 'it takes')}") from None
            raise ConfigError(f"{self.kind} '{name}': {exc}") from None
        return item(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


# -- argument type checks -------------------------------------------------------------------------------------------
def _callable(item: Any) -> Callable:
    return item.__init__ if inspect.isclass(item) else item


def _bound_args(item: Any, args: tuple) -> tuple:
    # ``signature(cls.__init__)`` includes ``self``
    return (None, *args) if inspect.isclass(item) else args


def _qualified(item: Any) -> str:
    return f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', repr(item))}"


def _type_hints(item: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(_callable(item), include_extras=True)
    except Exception:   # an annotation that cannot be resolved: fall back to the defaults' types
        return {}


def _type_of_default(parameter: inspect.Parameter) -> Any:
    default = parameter.default
    if default is inspect.Parameter.empty or default is None:
        return Any
    return type(default)


def check_value(value: Any, expected: Any) -> str | None:
    """None if ``value`` fits the annotation ``expected``, else what was expected (``"an integer >= 2"``)."""
    if expected is Any or expected is inspect.Parameter.empty:
        return None
    origin = typing.get_origin(expected)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(expected)
        problem = check_value(value, inner)
        if problem:
            return problem
        for extra in extras:
            if isinstance(extra, Range) and isinstance(value, (int, float)) and not extra.holds(value):
                return f"{_describe(inner)} {extra.describe()}"
        return None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(expected)
        if any(check_value(value, option) is None for option in options):
            return None
        return " or ".join(_describe(o) for o in options)
    if origin is typing.Literal:
        options = typing.get_args(expected)
        return None if value in options and not isinstance(value, bool) else \
            "one of " + ", ".join(shown(o) for o in options)
    if origin in (list, tuple, typing.Sequence, Iterable) or expected in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _describe(expected)
        args = [a for a in typing.get_args(expected) if a is not Ellipsis]
        if len(args) == 1 or (origin is tuple and args and all(a == args[0] for a in args)):
            bad = [item for item in value if check_value(item, args[0]) is not None]
            if bad:
                return _describe(expected)
        return None
    if origin in (dict, Mapping) or expected in (dict,):
        return None if isinstance(value, Mapping) else "a mapping"
    if expected is type(None):
        return None if value is None else "null"
    if expected is bool:
        return None if isinstance(value, bool) else "true or false"
    if expected is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if expected is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if expected is str:
        return None if isinstance(value, str) else "a string"
    return None     # a type this checker does not know: the constructor checks it


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(expected)
        ranges = [e.describe() for e in extras if isinstance(e, Range)]
        return _describe(inner) + (f" {ranges[0]}" if ranges else "")
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(o) for o in typing.get_args(expected))
    if origin is typing.Literal:
        return "one of " + ", ".join(shown(o) for o in typing.get_args(expected))
    if origin in (list, tuple, typing.Sequence) or expected in (list, tuple):
        args = [a for a in typing.get_args(expected) if a is not Ellipsis]
        return "a list" + (f" of {_plural(args[0])}" if args else "")
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(expected, getattr(expected, "__name__", str(expected)))


def _plural(expected: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(expected, _describe(expected))


__all__ = ["Registry", "Range", "closest", "hint", "shown", "check_value", "IMPORT_SEPARATOR"]
