"""Typed values for a tree of dataclasses: check a value against a field's annotation, build a
section from a nested mapping, and name unknown keys with the closest known ones.

Nothing here knows the training schema (``train/config.py``); the schema calls these to check
its fields, and recipes and ``--set`` overrides (``train/overrides.py``) call them to build one.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, Mapping, Sequence, Union

from ..errors import UserInputError

__all__ = ["ConfigError", "all_keys", "build", "check_section", "coerce", "fields", "unknown_key"]


class ConfigError(UserInputError):
    """A configuration value or key that is wrong; the message names the key."""


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or a :class:`ConfigError` naming ``key`` and the expected type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(key, value, option)
            except ConfigError:
                pass
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) == len(args):
            return tuple(coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args)))
    elif origin is dict and isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return dict(value)
    raise ConfigError(f"config key {key!r} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


@functools.lru_cache(maxsize=None)
def fields(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the dataclass tree ``cls``, sections included."""
    keys = []
    for name, tp in fields(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")
    return keys


def unknown_key(key: str, root: type) -> ConfigError:
    """The error for a key that ``root``'s tree lacks, with up to three close known keys."""
    close = difflib.get_close_matches(key, all_keys(root), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ConfigError(f"unknown config key {key!r}.{hint}")


def build(base: Any, data: Mapping[str, Any], *, prefix: str = "", root: type | None = None) -> Any:
    """A copy of the dataclass ``base`` with the values of the nested mapping ``data``, each coerced
    to its field's type; sections merge key by key. ``root`` is the tree unknown keys are looked up in."""
    cls = type(base)
    root = root or cls
    known = fields(cls)
    values = {}
    for key, value in data.items():
        full = prefix + str(key)
        if key not in known:
            raise unknown_key(full, root)
        tp = known[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {full!r} is a section; expected a mapping, got {value!r}")
            values[key] = build(getattr(base, key), value, prefix=full + ".", root=root)
        else:
            values[key] = coerce(full, value, tp)
    return dataclasses.replace(base, **values)


def check_section(obj: Any, prefix: str, rules: Mapping[str, Any], choices: Mapping[str, Sequence[str]]) -> None:
    """Coerce every field of the section ``obj`` in place and check it against ``rules`` (a function
    returning what the value must be, or None) and the allowed values ``choices`` (by dotted key)."""
    for name, tp in fields(type(obj)).items():
        key, value = prefix + name, getattr(obj, name)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"config key {key!r} is a section; expected {tp.__name__}, got {value!r}")
            continue
        value = coerce(key, value, tp)
        setattr(obj, name, value)
        rule = rules.get(key)
        problem = rule(value) if rule is not None else None
        if problem:
            raise ConfigError(f"config key {key!r} must be {problem}, got {value!r}")
        allowed = choices.get(key) if tp is str else None
        if allowed is not None and value not in allowed:
            close = difflib.get_close_matches(value, list(allowed), n=1)
            hint = f". Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config key {key!r} must be one of {', '.join(map(repr, allowed))}, got {value!r}{hint}")
