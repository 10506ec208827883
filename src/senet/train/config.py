"""The training configuration: one dataclass tree that is the single source of truth.

A run is described by a :class:`TrainConfig`. It is built from defaults, then a YAML recipe
(``train/recipes.py``), then ``key=value`` overrides (``train/overrides.py``), and written
back, resolved, into the run directory. Every value is checked against its field's type
(``train/coerce.py``) and its allowed range (:data:`RULES`) whenever a config is built, so a bad
value fails before any work with one line naming the key; an unknown key fails naming it and the
closest known keys.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence, Union

from ..data.mix import MODES as MIX_MODES, MixSettings
from ..errors import UserTypeError
from .choices import COMPILE_MODES, LOSSES, OPTIMIZERS, PRECISIONS, SCHEDULES
from .coerce import ConfigError, build, check_section

__all__ = [
    "ConfigError",
    "RULES",
    "check_config",
    "check_model_fits_data",
    "check_resume_changes",
    "config_changes",
    "RESUME_FIXED",
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "MixConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
]


@dataclasses.dataclass
class ModelConfig:
    """The network: a registered name plus ``create_model`` overrides (e.g. ``se_reduction: 8``).

    ``num_classes`` and ``in_chans`` come from the dataset unless given in ``overrides``.
    ``weights`` initialises from a file (transfer learning); keys that do not fit, such as a
    classifier with another number of classes, are left at their initial values.
    ``retrofit`` (options of ``senet.retrofit_from_config``, e.g. ``{conv_activations: true,
    se: {reduction: 8}, init: identity}``) inserts SE/BN after the weights are loaded (the transfer-learning study, docs/experiments.md).
    """

    name: str = "se_resnet20"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: str | None = None
    weights_source: str = "timm"
    retrofit: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Stochastic depth (Huang et al. 2016), timm's per-block linear rule; 0 = the network as published.
    drop_path_rate: float = 0.0
    # The fused Triton SE kernels (docs/performance.md): opt-in until they have run on a GPU.
    fused: bool = False

    def __post_init__(self) -> None:
        _check_fields(self, "model.")


@dataclasses.dataclass
class DataConfig:
    """Dataset (``senet.data.load_dataset`` spec) and batch augmentation (paper §5.1).

    The modern recipe's parts (Wightman et al. 2021, "ResNet strikes back", Table 1), all off by
    default: ``randaugment`` in timm's notation (``rand-m7-mstd0.5-inc1``: magnitude 7 of 10, its
    per-sample std 0.5, the increasing ops; ``n`` ops, default 2), ``reprob``: random erasing's
    probability (timm's ``pixel`` mode: per-pixel normal noise), ``aug_repeats``: repeated
    augmentation (Hoffer et al. 2020; each sample shown this many times per epoch under different
    augmentations, across the ranks), ``train_image_size``: the side training crops are made at
    (None: the test side; RSB A3 trains at 160 and tests at 224, Touvron et al. 2019).
    """

    dataset: str = "bundled"
    root: str | None = None
    download: bool = False
    image_size: int | None = None  # None: the model's own input size
    crop_padding: int = 4  # zero-pad 4 px then random crop, as in §5.1 for CIFAR
    flip: bool = True
    cutout: int = 0
    num_workers: int = 2
    on_corrupt: str = "warn"
    empty_classes: str = "warn"  # image folders: class folders without images are skipped ("warn") or refused
    randaugment: str = ""  # "" = off; e.g. "rand-m7-mstd0.5-inc1"
    reprob: float = 0.0
    aug_repeats: int = 1
    train_image_size: int | None = None
    # Image folders: the crop fraction of the evaluation view the card records (None: 0.875, the
    # centre crop matching the random-size crop, paper §5.1; RSB tests at 0.95).
    eval_crop_pct: float | None = None

    def __post_init__(self) -> None:
        _check_fields(self, "data.")


@dataclasses.dataclass
class OptimConfig:
    """Optimiser. ``decay_norm_and_bias=False`` exempts 1-d parameters (BN, biases) and the names the
    model declares in ``no_weight_decay()`` from weight decay (timm's ``filter_bias_and_bn``).

    ``layer_decay`` (None = off) scales each parameter group's learning rate by
    ``layer_decay ** (deepest - depth)``, depths from ``model.group_matcher()`` (timm's
    ``param_groups_layer_decay``; Clark et al. 2020). ``max_grad_norm``: LAMB's clipping of the
    global gradient norm inside the optimiser, as timm's ``Lamb`` (0 = off). ``trust_coeff``:
    LARS's trust coefficient (You et al. 2017, eta).
    """

    name: str = "sgd"  # sgd | adam | adamw | rmsprop | lamb | lars
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    alpha: float = 0.99  # RMSProp smoothing constant
    layer_decay: float | None = None
    max_grad_norm: float = 1.0
    trust_coeff: float = 0.001

    def __post_init__(self) -> None:
        _check_fields(self, "optim.")


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

    def __post_init__(self) -> None:
        _check_fields(self, "schedule.")


@dataclasses.dataclass
class MixConfig(MixSettings):
    """Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of each training batch, as timm's
    ``Mixup``: with probability ``prob``, one of them (CutMix with probability ``switch_prob`` when
    both alphas are > 0) with a ratio drawn from Beta(alpha, alpha), per ``batch`` (one ratio and box
    for the batch) or per ``elem`` (each sample with the batch reversed). Targets carry
    ``label_smoothing``. Both alphas 0 = off (the paper's recipe). The fields are
    :class:`senet.data.mix.MixSettings`'s; this section adds the config's coercion and messages.
    """

    def __post_init__(self) -> None:
        _check_fields(self, "mix.")


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run. ``batch_size`` is global (split over ranks).

    ``precision``: ``auto`` (bf16 on CUDA where supported, else fp16; fp32 on CPU), ``fp32``,
    ``bf16`` or ``fp16`` (CUDA only). ``grad_clip``: max gradient norm, 0 = off.
    ``label_smoothing`` as in the paper's ablations (§6). ``loss``: ``ce`` (cross-entropy) or
    ``bce`` (binary cross-entropy on the (mixed) targets, RSB §3.1), with ``bce_target_thresh``
    (None = off) turning targets above it to 1 and the rest to 0 (timm). ``ema_decay`` (0 = off):
    an exponential moving average of the weights and buffers, evaluated and checkpointed beside
    the raw weights. ``threads``: CPU threads (0 = torch's
    default); float results depend on it, so a run is bit-reproducible with the same value.
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
    mix: MixConfig = dataclasses.field(default_factory=MixConfig)
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 500
    seed: int = 0
    label_smoothing: float = 0.0
    loss: str = "ce"
    bce_target_thresh: float | None = None
    ema_decay: float = 0.0
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str = "default"
    grad_clip: float = 0.0
    sync_bn: bool = False
    save_every: int = 1
    sync_every: int = 50
    threads: int = 0  # torch intra-op CPU threads for this run; 0 = torch's default (senet.train.threads)
    tensorboard: bool = False  # also log the metrics.csv scalars to RUN_DIR/tensorboard (needs `tensorboard`)

    def __post_init__(self) -> None:
        _check_fields(self, "")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


# --- allowed values, checked whenever a config is built ------------------------------------------

# A rule returns what the value must be when it is not allowed, else None.
Rule = Callable[[Any], Union[str, None]]


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            none: str | None = None, why: str = "") -> Rule:
    """A finite number in the interval (``lo_open``/``hi_open`` exclude the ends); ``none`` allows null."""
    if lo is not None and hi is not None:
        text = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        text = "finite"
    text = f"{text} or null ({none})" if none else text
    text = f"{text} ({why})" if why else text

    def rule(v: Any) -> str | None:
        if v is None and none:
            return None
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            return f"a finite number {text}"
        ok = (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or (v < hi if hi_open else v <= hi))
        return None if ok else text
    return rule


def _each(inner: Rule) -> Rule:
    return lambda values: next((f"numbers each {msg}" for msg in map(inner, values) if msg), None)


def _increasing(v: tuple[int, ...]) -> str | None:
    ok = all(m >= 1 for m in v) and all(a < b for a, b in zip(v, v[1:]))
    return None if ok else "positive epochs in increasing order, e.g. [30, 60, 90]"


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "a non-empty string"


def _model_overrides(v: Mapping[str, Any]) -> str | None:
    # Free-form (create_model checks its arguments), but the sizes the data sets are checked here.
    for key in ("num_classes", "in_chans"):
        n = v.get(key)
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise ConfigError(f"config key 'model.overrides.{key}' must be an integer >= 1, got {n!r}")
    se_options = {k: val for k, val in v.items() if k.startswith("se_")}
    if se_options:  # the SE block's own checks, reported under the key the user wrote
        from ..layers.se import SEConfig  # here: the layers need torch, a config alone does not

        for key, value in se_options.items():
            try:
                SEConfig().replace(**{key[3:]: tuple(value) if isinstance(value, list) else value})
            except (ValueError, TypeError) as e:
                raise ConfigError(f"config key 'model.overrides.{key}' = {value!r}: {e}") from None
    return None


def _randaugment(v: str) -> str | None:
    if not v:
        return None
    from ..data.augment import parse_randaugment  # here: the data layer needs torch, a config alone does not

    try:
        parse_randaugment(v)
    except ValueError as e:
        return f"timm's RandAugment notation, e.g. 'rand-m9-mstd0.5-inc1' ({e})"
    return None


@functools.lru_cache(maxsize=None)
def _choices() -> dict[str, Sequence[str]]:
    # Imported here: these two lists live beside code that needs torch, and a config alone does not.
    from ..data.folder import EMPTY_CLASSES, ON_CORRUPT
    from ..weights.convert import SOURCES

    return {"model.weights_source": tuple(SOURCES), "data.on_corrupt": ON_CORRUPT,
            "data.empty_classes": EMPTY_CLASSES, "optim.name": OPTIMIZERS, "schedule.name": SCHEDULES,
            "precision": PRECISIONS, "compile_mode": COMPILE_MODES, "mix.mode": MIX_MODES, "loss": LOSSES}


#: The allowed values of every field that has a range (by dotted key); fields with a fixed set of
#: values are checked against the lists of :func:`_choices`; bools, free text and paths need no rule.
RULES: dict[str, Rule] = {
    "model.name": _nonempty,
    "model.overrides": _model_overrides,
    "data.dataset": _nonempty,
    "data.image_size": _number(1, none="the model's input size"),
    "data.crop_padding": _number(0),
    "data.cutout": _number(0, why="0 = off"),
    "data.num_workers": _number(0, why="0 = load in the main process"),
    # lr 0 is allowed: the weights stay as loaded while BN statistics adapt (a linear-probe check).
    "optim.lr": _number(0),
    "optim.momentum": _number(0, 1, hi_open=True),
    "optim.weight_decay": _number(0),
    "optim.betas": _each(_number(0, 1, hi_open=True)),
    "optim.eps": _number(0, lo_open=True),
    "optim.alpha": _number(0, 1),
    "optim.layer_decay": _number(0, 1, lo_open=True, none="off"),
    "optim.max_grad_norm": _number(0, why="0 = off"),
    "optim.trust_coeff": _number(0, lo_open=True),
    "model.drop_path_rate": _number(0, 1, hi_open=True),
    "data.randaugment": _randaugment,
    "data.reprob": _number(0, 1),
    "data.aug_repeats": _number(1, why="1 = off"),
    "data.train_image_size": _number(1, none="the test side"),
    "data.eval_crop_pct": _number(0, 1, lo_open=True, none="the pipeline's own view"),
    "mix.mixup_alpha": _number(0, why="0 = off"),
    "mix.cutmix_alpha": _number(0, why="0 = off"),
    "mix.prob": _number(0, 1),
    "mix.switch_prob": _number(0, 1),
    "bce_target_thresh": _number(0, 1, hi_open=True, none="off"),
    "ema_decay": _number(0, 1, hi_open=True, why="0 = off"),
    "schedule.step_size": _number(1, why="epochs between drops"),
    "schedule.gamma": _number(0, lo_open=True),
    "schedule.milestones": _increasing,
    "schedule.min_lr": _number(0),
    "schedule.warmup_epochs": _number(0, why="0 = no warm-up"),
    "schedule.warmup_start_factor": _number(0, 1),
    "epochs": _number(1),
    "batch_size": _number(1),
    "eval_batch_size": _number(1),
    "seed": lambda v: None if 0 <= v < 2**63 else "an integer in [0, 2**63)",  # what torch.manual_seed takes
    "label_smoothing": _number(0, 1, hi_open=True),
    "grad_clip": _number(0, why="max gradient norm, 0 = off"),
    "save_every": _number(1, why="save the last checkpoint every N epochs"),
    "threads": _number(0, why="0 = torch's default"),
    "sync_every": _number(1, why="training steps between reads of the divergence flag"),
}


def _check_fields(obj: Any, prefix: str) -> None:
    """Coerce and check every field of the config section ``obj`` (``__post_init__``)."""
    check_section(obj, prefix, RULES, _choices())


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Check every field of ``cfg`` against its type and :data:`RULES`, and the rules between
    fields; return ``cfg``. Configs are checked when built; this also catches later assignments."""
    if not isinstance(cfg, TrainConfig):
        raise UserTypeError(f"expected a TrainConfig, got {type(cfg).__name__}")
    for section, prefix in ((cfg.model, "model."), (cfg.data, "data."), (cfg.optim, "optim."),
                            (cfg.schedule, "schedule."), (cfg.mix, "mix."), (cfg, "")):
        _check_fields(section, prefix)
    o = cfg.optim
    # (Other optimisers ignore nesterov, so a recipe's nesterov=true survives --set optim.name=adam.)
    if o.nesterov and o.name in ("sgd", "lars") and o.momentum <= 0:
        raise ConfigError(f"config key 'optim.nesterov' needs optim.momentum > 0 with SGD, got "
                          f"optim.momentum={o.momentum!r}; set optim.nesterov=false or a momentum")
    return cfg


def check_model_fits_data(cfg: TrainConfig, num_classes: int, in_chans: int) -> None:
    """Refuse ``model.overrides`` that contradict the dataset: a classifier narrower than the
    labels would index past its outputs, and a stem for other channels cannot take the images."""
    for key, actual, what in (("num_classes", num_classes, "classes"), ("in_chans", in_chans, "image channels")):
        given = cfg.model.overrides.get(key)
        if given is not None and given != actual:
            raise ConfigError(f"config key 'model.overrides.{key}' is {given!r} but the dataset has {actual} "
                              f"{what}; drop the override (the data sets it)")


#: What a resumed run cannot change: the network and its weights' shapes, the data it learns, and the
#: optimiser's class and parameter groups (its saved state would not fit). Everything else may change
#: with ``--resume RUN --set KEY=VALUE`` (optimiser hyperparameters are applied to the restored optimiser).
RESUME_FIXED = ("model.name", "model.overrides", "model.retrofit", "data.dataset", "data.image_size", "optim.name",
                "optim.decay_norm_and_bias", "optim.layer_decay", "ema_decay")


def config_changes(old: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for every field that differs (entries of the
    free-form mappings, such as ``model.overrides.se_reduction``, one by one; an entry that one
    side lacks shows as ``"<unset>"``)."""
    def flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {f"{prefix}{k}": v})
        return out

    a, b = flat(config_to_dict(old)), flat(config_to_dict(new))
    unset = "<unset>"
    return {k: (a.get(k, unset), b.get(k, unset)) for k in [*a, *(k for k in b if k not in a)]
            if a.get(k, unset) != b.get(k, unset)}


def check_resume_changes(run: TrainConfig, new: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Refuse a resumed config ``new`` that changes a :data:`RESUME_FIXED` field of the run's own
    ``run``, naming the field and both values; return the changes that are allowed."""
    changes = config_changes(run, new)
    for key, (was, now) in changes.items():
        if any(key == f or key.startswith(f + ".") for f in RESUME_FIXED):
            raise ConfigError(f"config key {key!r} cannot change on resume: the run has {was!r}, got {now!r}; "
                              f"start a new run (--out) to change it")
    return changes


# --- to and from plain mappings ----------------------------------------------------------------

def config_from_dict(data: Mapping[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Merge a nested mapping (e.g. parsed YAML) into ``base`` (default: the defaults), checked."""
    if not isinstance(data or {}, Mapping):
        raise ConfigError(f"a config must be a mapping of config keys, got {type(data).__name__}")
    return check_config(build(base if base is not None else TrainConfig(), data or {}))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict (tuples as lists) suitable for YAML and JSON."""
    def plain(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))
