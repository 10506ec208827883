"""The training configuration: one dataclass tree that is the single source of truth.

A run is described by a :class:`TrainConfig`. It is built from defaults, then a YAML recipe
(:func:`load_recipe`), then ``key=value`` overrides (:func:`apply_overrides`), and written
back, resolved, into the run directory. Every value is checked against its field's type, and
an unknown key fails naming it and the closest known keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

__all__ = [
    "ConfigError",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "list_recipes",
    "load_recipe",
    "load_config",
    "dump_config",
]


class ConfigError(ValueError):
    """A configuration value or key that is wrong; the message names the key."""


@dataclasses.dataclass
class ModelConfig:
    """The network: a registered name plus ``create_model`` overrides (e.g. ``se_reduction: 8``).

    ``num_classes`` and ``in_chans`` come from the dataset unless given in ``overrides``.
    ``weights`` initialises from a file (transfer learning); keys that do not fit, such as a
    classifier with another number of classes, are left at their initial values.
    ``retrofit`` (options of ``senet.retrofit_from_config``, e.g. ``{conv_activations: true,
    se: {reduction: 8}, init: identity}``) inserts SE/BN after the weights are loaded (seed 003).
    """

    name: str = "se_resnet20"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    weights_source: str = "timm"
    retrofit: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DataConfig:
    """Dataset (``senet.data.load_dataset`` spec) and batch augmentation (paper §5.1)."""

    dataset: str = "bundled"
    root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the model's own input size
    crop_padding: int = 4  # zero-pad 4 px then random crop, as in §5.1 for CIFAR
    flip: bool = True
    cutout: int = 0
    num_workers: int = 2
    on_corrupt: str = "warn"


@dataclasses.dataclass
class OptimConfig:
    """Optimiser. ``decay_norm_and_bias=False`` exempts BN/bias parameters from weight decay."""

    name: str = "sgd"  # sgd | adam | adamw | rmsprop
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99  # RMSProp smoothing constant


@dataclasses.dataclass
class ScheduleConfig:
    """Learning-rate schedule (pure functions in ``senet.train.schedule``), in epochs.

    ``step``: x ``gamma`` every ``step_size`` epochs (the paper's ÷10 every 30, §5.1);
    ``multistep``: x ``gamma`` at each of ``milestones``; ``cosine``: to ``min_lr``;
    ``constant``. A linear warm-up from ``warmup_start_factor`` x lr over ``warmup_epochs``
    can precede any of them.
    """

    name: str = "cosine"
    step_size: int = 30
    gamma: float = 0.1
    milestones: tuple[int, ...] = ()
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run. ``batch_size`` is global (split over ranks).

    ``precision``: ``auto`` (bf16 on CUDA where supported, else fp16; fp32 on CPU), ``fp32``,
    ``bf16`` or ``fp16`` (CUDA only). ``grad_clip``: max gradient norm, 0 = off.
    ``label_smoothing`` as in the paper's ablations (§6).
    ``compile`` wraps the network in ``torch.compile`` with ``compile_mode`` (``default``,
    ``reduce-overhead``: CUDA graphs, which remove the launch overhead of small networks,
    ``max-autotune``, ``max-autotune-no-cudagraphs``). ``sync_every``: the training step
    never waits for the device; the non-finite-loss check is read every ``sync_every`` steps
    and at each epoch's end.
    """

    source: str = ""
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 500
    seed: int = 0
    label_smoothing: float = 0.0
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    grad_clip: float = 0.0
    sync_bn: bool = False
    save_every: int = 1
    sync_every: int = 50

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# --- conversion between dicts and dataclasses, with type checks ---------------------------------

def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp``, or a :class:`ConfigError` naming ``key`` and the expected type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
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
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) == len(args):
            return tuple(_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, args)))
    elif origin is dict and isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return dict(value)
    raise ConfigError(f"config key {key!r} expects {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown(key: str, known: Sequence[str]) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ConfigError(f"unknown config key {key!r}.{hint}")


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _fields(cls).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(tp):
            keys += _all_keys(tp, f"{prefix}{name}.")
    return keys


def _build(cls: type, data: Mapping[str, Any], prefix: str, base: Any) -> Any:
    fields = _fields(cls)
    values = {}
    for key, value in data.items():
        full = prefix + str(key)
        if key not in fields:
            raise _unknown(full, _all_keys(TrainConfig))
        tp = fields[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {full!r} is a section; expected a mapping, got {value!r}")
            values[key] = _build(tp, value, full + ".", getattr(base, key))
        else:
            values[key] = _coerce(full, value, tp)
    return dataclasses.replace(base, **values)


def config_from_dict(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Merge a nested mapping (e.g. parsed YAML) into ``base`` (default: the defaults)."""
    return _build(TrainConfig, data or {}, "", base if base is not None else TrainConfig())


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (tuples as lists) suitable for YAML and JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def apply_overrides(cfg: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Apply ``["optim.lr=0.05", "model.overrides.se_reduction=8", ...]`` to ``cfg``.

    Values are parsed as YAML scalars/lists (``0.05``, ``true``, ``[30, 60]``, ``null``) and
    checked against the field's type; ``str`` fields take the text as written.
    """
    import yaml

    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        parts = key.split(".")
        cls, owner_path = TrainConfig, []
        tp: Any = None
        for i, part in enumerate(parts):
            fields = _fields(cls)
            if part not in fields:
                raise _unknown(key, _all_keys(TrainConfig))
            tp = fields[part]
            owner_path.append(part)
            if typing.get_origin(tp) is dict and i < len(parts) - 1:
                break  # free-form mapping (model.overrides): the rest of the key is its entry
            if dataclasses.is_dataclass(tp):
                cls = tp
            elif i < len(parts) - 1:
                raise _unknown(key, _all_keys(TrainConfig))
        if dataclasses.is_dataclass(tp):
            raise ConfigError(f"config key {key!r} is a section; set one of its fields, e.g. {key}.{next(iter(_fields(tp)))}")
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
        cfg = config_from_dict(nested, cfg)
    return cfg


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in b.items():
        a[k] = _merge(dict(a[k]), v) if isinstance(v, Mapping) and isinstance(a.get(k), Mapping) else v
    return a


# --- recipes ------------------------------------------------------------------------------------

def _recipe_dir() -> Any:
    return resources.files("senet") / "recipes"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``senet train --config NAME``)."""
    return sorted(p.name[:-5] for p in _recipe_dir().iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str | Path) -> dict[str, Any]:
    """The raw mapping of a recipe: a YAML file path, or the name of a shipped recipe."""
    import yaml

    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text()
    else:
        entry = _recipe_dir() / f"{name_or_path}.yaml"
        if not entry.is_file():
            names = list_recipes()
            close = difflib.get_close_matches(str(name_or_path), names, n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise FileNotFoundError(f"no recipe file or shipped recipe named {str(name_or_path)!r}.{hint} "
                                    f"Shipped: {', '.join(names)}")
        text = entry.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {str(name_or_path)!r} is not valid YAML: {e}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"recipe {str(name_or_path)!r} must be a mapping of config keys")
    return dict(data)


def load_config(recipe: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults <- ``recipe`` (path or shipped name; default: ``bundled``) <- ``overrides``."""
    cfg = config_from_dict(load_recipe(recipe if recipe is not None else "bundled"))
    return apply_overrides(cfg, overrides)


def dump_config(cfg: TrainConfig) -> str:
    """``cfg`` as YAML text that :func:`config_from_dict` reads back to an equal config."""
    import yaml

    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
