"""Reward parameters: declared in the reward's signature, checked before the first call.

The rule for every reward (built-in or plugin): its *parameters* are its named keyword parameters after
``completions``; dataset columns arrive in ``**columns``. The standard column names (:data:`COLUMNS`:
``solution``, ``task``, ``id``, ... and TRL's extras) may also be named in a signature, and then they are
columns, not parameters. A parameter without a default is required.

A value is checked against its annotation (so plugins get the same checks by writing ordinary type
hints): ``bool``, ``int``, ``float`` (finite), ``str``, ``None``, ``Literal[...]``, ``X | Y``,
``list[X]`` / ``tuple[X, ...]`` (a YAML list is accepted for either), ``dict[K, V]``,
``Annotated[X, Range(lo, hi)]`` for numeric bounds, and any class (``isinstance``); ``Any`` and
annotations that do not resolve accept anything. A reward may also carry a ``check_params(values)``
attribute for constraints between parameters: it gets every parameter's value (defaults filled in) and
raises ``ValueError`` with one line.

:func:`validate_params` checks a config's ``params`` mapping at load time (names and values);
:func:`check_arguments` is what a built-in calls on its own arguments, so a direct call (TRL) fails the
same way.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

# Keyword arguments the trainer and TRL pass as columns (one entry per completion), never parameters.
COLUMNS = frozenset(
    {
        "completions",
        "prompts",
        "solution",
        "task",
        "coord_space",
        "image_size",
        "id",
        "images",
        "video",
        "completion_ids",
        "trainer_state",
        "log_metric",
        "log_extra",
    }
)


@dataclass(frozen=True)
class Range:
    """Numeric bounds for ``Annotated[float, Range(0, 1)]``; ``None`` is unbounded, ``*_open`` excludes."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "a number"


class ParamError(ValueError):
    """A bad reward parameter: ``where`` (``rewards[0].params``), ``name`` (or "" for several), ``problem``."""

    def __init__(self, where: str, name: str, problem: str):
        self.where, self.name, self.problem = where, name, problem
        key = ".".join(p for p in (where, name) if p)
        super().__init__(f"{key}: {problem}" if key else problem)


class Declared(typing.NamedTuple):
    """A reward's parameters: ``{name: (default or inspect.Parameter.empty, annotation or Any)}``."""

    params: dict[str, tuple[Any, Any]]


def declared(fn: Callable[..., Any]) -> Declared:
    """The parameters ``fn`` declares (see the module doc), with their defaults and annotations."""
    try:
        return _declared_cached(fn)
    except TypeError:  # an unhashable callable object: not cached
        return _declared(fn)


@functools.lru_cache(maxsize=512)
def _declared_cached(fn: Callable[..., Any]) -> Declared:
    return _declared(fn)


def _declared(fn: Callable[..., Any]) -> Declared:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: it declares nothing we can see
        return Declared({})
    target = fn.func if isinstance(fn, functools.partial) else fn
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # noqa: BLE001 - a plugin's annotation that does not resolve: check names only
        hints = {}
    out: dict[str, tuple[Any, Any]] = {}
    for k, p in enumerate(sig.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in COLUMNS:
            continue
        if k == 0 and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue  # the completions, whatever the plugin calls them
        out[p.name] = (p.default, hints.get(p.name, Any))
    return Declared(out)


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None) or tp is None:
        return "None"
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Annotated:
        ranges = [m.describe() for m in tp.__metadata__ if isinstance(m, Range)]
        return _describe(args[0]) + (f" {ranges[0]}" if ranges else "")
    if origin in (list, tuple):
        return f"a list of {_describe(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping of {_describe(args[0])} to {_describe(args[1])}" if args else "a mapping"
    return getattr(tp, "__name__", str(tp))


def check_value(value: Any, tp: Any) -> str | None:
    """Why ``value`` does not fit annotation ``tp`` (one line), or None when it does."""
    if tp is Any or isinstance(tp, (str, typing.ForwardRef, typing.TypeVar)):
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        problem = check_value(value, args[0])
        if problem:
            return problem
        for meta in tp.__metadata__:
            if isinstance(meta, Range) and value is not None and value not in meta:
                return f"must be {meta.describe()}, got {value!r}"
        return None
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return None
        return f"{value!r} is not allowed; choose from {', '.join(map(str, args))}"
    if origin in (typing.Union, types.UnionType):
        problems = [check_value(value, a) for a in args]
        if any(p is None for p in problems):
            return None
        arms = [p for a, p in zip(args, problems) if a is not type(None)]
        return arms[0] if len(arms) == 1 else f"expected {_describe(tp)}, got {value!r}"  # X | None: X's
    if tp is type(None) or tp is None:
        return None if value is None else f"expected None, got {value!r}"
    if tp is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {value!r}"
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {value!r}"
        return None if isinstance(value, int) or math.isfinite(value) else f"must be finite, got {value!r}"
    if tp is str:
        return None if isinstance(value, str) else f"expected a string, got {value!r}"
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return f"expected {_describe(tp)}, got {value!r}"
        item = args[0] if args else Any
        for k, v in enumerate(value):
            problem = check_value(v, item)
            if problem:
                return f"item {k}: {problem}"
        return None
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            return f"expected {_describe(tp)}, got {value!r}"
        kt, vt = args if len(args) == 2 else (Any, Any)
        for k, v in value.items():
            problem = check_value(k, kt) or check_value(v, vt)
            if problem:
                return f"key {k!r}: {problem}"
        return None
    if isinstance(tp, type):
        return None if isinstance(value, tp) else f"expected {tp.__name__}, got {value!r}"
    return None  # Callable, Protocol, ...: not checked


def _label(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "reward_name", None) or getattr(fn, "__name__", None) or fn)


def check_arguments(fn: Callable[..., Any], values: Mapping[str, Any], where: str | None = None) -> None:
    """Check the values of ``fn``'s declared parameters found in ``values`` (other keys are ignored),
    then its ``check_params`` hook; raises :class:`ParamError`. ``where`` defaults to the reward's name.

    A built-in calls ``check_arguments(itself, locals())`` first thing, so a bad value passed directly
    (TRL, a notebook) fails with the same one-line message as at config load.
    """
    params = declared(fn).params
    for name, (default, tp) in params.items():
        if name in values and values[name] is not default:  # a default is taken as valid (hot path)
            problem = check_value(values[name], tp)
            if problem:
                raise ParamError(_label(fn) if where is None else where, name, problem)
    hook = getattr(fn, "check_params", None)
    if callable(hook):
        full = {n: values.get(n, d) for n, (d, _) in params.items()}
        try:
            hook(full)
        except ValueError as e:
            raise ParamError(_label(fn) if where is None else where, "", str(e)) from None


def validate_params(fn: Callable[..., Any], params: Mapping[str, Any] | None, where: str = "params") -> dict:
    """Check a ``params`` mapping against the parameters ``fn`` declares; returns it as a dict.

    Raises :class:`ParamError` (a ``ValueError``, one line): a column name, an unknown name (listing the
    accepted ones), a missing required parameter, or a value its annotation (or hook) rejects.
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ParamError(where, "", f"expected a mapping of parameter names to values, got {params!r}")
    label = _label(fn)
    accepted = declared(fn).params
    for name in params:
        if not isinstance(name, str) or not name:
            raise ParamError(where, str(name), "parameter names must be non-empty strings")
        if name in COLUMNS:
            raise ParamError(
                where, name, f"{name!r} is a dataset column the trainer passes, not a parameter of {label!r}"
            )
        if name not in accepted:
            names = ", ".join(accepted) if accepted else "none (it takes no parameters)"
            raise ParamError(where, name, f"unknown parameter of reward {label!r}; accepted: {names}")
    for name, (default, _) in accepted.items():
        if default is inspect.Parameter.empty and name not in params:
            raise ParamError(where, name, f"reward {label!r} needs this parameter (it has no default)")
    check_arguments(fn, params, where)
    return dict(params)
