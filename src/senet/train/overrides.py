"""``--set key=value`` overrides: the text a user types, parsed and applied to a :class:`TrainConfig`.

A value is read as a YAML scalar or list and checked against its field's type (``train/coerce.py``);
a dotted key below a free-form mapping (``model.overrides.se_reduction=8``) sets that entry.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Mapping, Sequence

import yaml

from .coerce import ConfigError, build, fields, unknown_key
from .config import TrainConfig, check_config

__all__ = ["apply_overrides"]


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Apply ``["optim.lr=0.05", "model.overrides.se_reduction=8", ...]`` to ``cfg``.

    Values are parsed as YAML scalars/lists (``0.05``, ``true``, ``[30, 60]``, ``null``) and
    checked against the field's type; ``str`` fields take the text as written. The rules between
    fields are checked once all overrides are applied, so their order does not matter.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        parts = key.split(".")
        cls, owner_path = TrainConfig, []
        tp: Any = None
        for i, part in enumerate(parts):
            known = fields(cls)
            if part not in known:
                raise unknown_key(key, TrainConfig)
            tp = known[part]
            owner_path.append(part)
            if typing.get_origin(tp) is dict and i < len(parts) - 1:
                break  # free-form mapping (model.overrides): the rest of the key is its entry
            if dataclasses.is_dataclass(tp):
                cls = tp
            elif i < len(parts) - 1:
                raise unknown_key(key, TrainConfig)
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"config key {key!r} is a section; set one of its fields, e.g. {key}.{next(iter(fields(tp)))}")
        try:
            value = text if tp in (str, str | None) and text != "null" else yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config key {key!r}: cannot parse {text!r}: {e}") from None
        entry = parts[len(owner_path):]
        nested: Any = {entry[-1]: value} if entry else value
        for name in reversed(entry[:-1]):
            nested = {name: nested}
        if entry:  # merge into the existing mapping rather than replacing it
            current = cfg
            for name in owner_path:
                current = getattr(current, name)
            nested = _merge(dict(current), nested)
        for name in reversed(owner_path):
            nested = {name: nested}
        cfg = build(cfg, nested)
    return check_config(cfg)


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        a[k] = _merge(dict(a[k]), v) if isinstance(v, Mapping) and isinstance(a.get(k), Mapping) else v
    return a
