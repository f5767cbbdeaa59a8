"""The reward registry: names, import specs and entry points resolve to plain reward functions.

A reward function is ``fn(completions: list, **columns) -> list[float | None]``: one score per
completion, ``None`` where the reward does not apply. It is usable unchanged as a TRL ``reward_funcs``
entry. A spec names a reward in one of three ways:

- a registry name (``"iou"``), registered with :func:`register_reward` or through the entry-point
  group ``mmrft.rewards`` of an installed package;
- ``package.module:function``;
- ``path/to/file.py:function`` (relative paths resolve against the current directory).

A reward's parameters are the named keyword parameters of its signature; dataset columns arrive in
``**columns`` (see :mod:`rewards.params`). :func:`validate_params` checks a config's ``params`` against
them before the first call: an unknown name lists the accepted ones, a bad value names what is allowed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from rewards import params as _params

RewardFn = Callable[..., list]

ENTRY_POINT_GROUP = "mmrft.rewards"

_REGISTRY: dict[str, RewardFn] = {}
_BUILTINS_LOADED = False
_ENTRY_POINTS_LOADED = False


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register ``fn`` under ``name``; the name is part of the public API once shipped."""

    def deco(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            existing = _REGISTRY[name]
            if f"{existing.__module__}.{existing.__qualname__}" != f"{fn.__module__}.{fn.__qualname__}":
                raise ValueError(f"reward {name!r} is already registered by {existing.__module__}")
        fn.reward_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("rewards.builtin")


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        fn = ep.load()
        if ep.name not in _REGISTRY:
            register_reward(ep.name)(fn)


def available() -> dict[str, RewardFn]:
    """Every registered reward (built-ins and installed plugins), by name."""
    _load_builtins()
    _load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def _from_file(path: str, attr: str) -> Any:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise ValueError(f"reward spec {path}:{attr}: file {file} does not exist")
    mod_name = f"mmrft_reward_plugin_{abs(hash(str(file)))}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        spec.loader.exec_module(module)
    return getattr(sys.modules[mod_name], attr, None)


def get(spec: str) -> RewardFn:
    """Resolve a reward spec (registry name, ``pkg.mod:fn`` or ``file.py:fn``) to its function.

    Raises ``ValueError`` naming the spec and, for an unknown name, the names that exist.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"reward spec must be a non-empty string, got {spec!r}")
    if ":" in spec:
        target, attr = spec.rsplit(":", 1)
        if target.endswith(".py"):
            fn = _from_file(target, attr)
        else:
            try:
                fn = getattr(importlib.import_module(target), attr, None)
            except ImportError as e:
                raise ValueError(f"reward spec {spec!r}: cannot import module {target!r} ({e})") from e
        if fn is None or not callable(fn):
            raise ValueError(f"reward spec {spec!r}: {attr!r} is not a callable in {target!r}")
        return fn
    regs = available()
    if spec not in regs:
        raise ValueError(
            f"unknown reward {spec!r}; available: {', '.join(regs)} "
            "(or give 'package.module:function' / 'path/to/file.py:function')"
        )
    return regs[spec]


def validate_params(
    spec: str | RewardFn, params: dict[str, Any] | None = None, where: str = "params"
) -> dict[str, Any]:
    """Check ``params`` against the parameters reward ``spec`` (a spec or the function) declares.

    Returns the params as a dict. Raises ``ValueError`` with one line: an unresolvable spec, a column
    name, an unknown parameter (``<where>.treshold: unknown parameter of reward 'iou'; accepted:
    variant, threshold, device``), a missing required one, or a bad value (``<where>.structure:
    'think_anwser' is not allowed; choose from think_answer, answer_only, json, none``).
    """
    fn = get(spec) if isinstance(spec, str) else spec
    return _params.validate_params(fn, params, where)


def validate_reward(spec: str, params: dict[str, Any] | None = None, where: str = "reward") -> RewardFn:
    """Resolve ``spec`` and check its ``params``; returns the function. Errors name ``<where>.name`` or
    ``<where>.params.<parameter>`` (a config passes ``where="rewards[0]"``)."""
    try:
        fn = get(spec)
    except ValueError as e:
        raise ValueError(f"{where}.name: {e}") from None
    _params.validate_params(fn, params, f"{where}.params")
    return fn
