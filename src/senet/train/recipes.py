"""Recipes: the YAML files a run starts from (shipped in ``senet/recipes`` or the user's own), and
the resolved config written back as YAML into a run directory."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..errors import MissingPathError
from .coerce import ConfigError
from .config import TrainConfig, config_from_dict, config_to_dict
from .overrides import apply_overrides

__all__ = ["dump_config", "list_recipes", "load_config", "load_recipe"]


def _recipe_dir() -> Any:
    return resources.files("senet") / "recipes"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``senet train --config NAME``)."""
    return sorted(p.name[:-5] for p in _recipe_dir().iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe: a YAML file path, or the name of a shipped recipe."""
    path = Path(name_or_path)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"recipe {str(path)!r} is not a YAML text file (byte {e.start} is not UTF-8)") from None
    else:
        entry = _recipe_dir() / f"{name_or_path}.yaml"
        if not entry.is_file():
            names = list_recipes()
            close = difflib.get_close_matches(str(name_or_path), names, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise MissingPathError(f"no recipe file or shipped recipe named {str(name_or_path)!r}.{hint} "
                                   f"Shipped: {', '.join(names)}")
        text = entry.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())  # YAML's message spans lines; keep the error to one
        raise ConfigError(f"recipe {str(name_or_path)!r} is not valid YAML: {detail}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"recipe {str(name_or_path)!r} must be a mapping of config keys")
    return dict(data)


def load_config(recipe: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- ``recipe`` (path or shipped name; default: ``bundled``) <- ``overrides``."""
    cfg = config_from_dict(load_recipe(recipe if recipe is not None else "bundled"))
    return apply_overrides(cfg, overrides)


def dump_config(cfg: TrainConfig) -> str:
    """``cfg`` as YAML text that :func:`config_from_dict` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
