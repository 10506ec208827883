"""Retrofitting SE blocks (and BN layers) into any existing network (paper §3.3: SE is a drop-in
unit "integrated into standard architectures"; the transfer-learning study of docs/experiments.md).

:func:`retrofit` takes any ``nn.Module`` -- a registered model, a user's own network, a plain
``nn.Sequential``, a model holding pretrained weights -- and inserts, after each selected module,
an optional ``BatchNorm2d`` and an SE block built from any :class:`~senet.layers.se.SEConfig`.
Insertion points are chosen by module type, by qualified-name glob or regex, or as "the
activation after each convolution". Each selected module is replaced in its parent by a
:class:`Retrofitted` wrapper (``module``, ``bn``, ``se``), so the new blocks are ordinary
submodules: they show in ``print(model)``, train, save and count like any other.

Which module runs after which is read from one forward pass on the ``meta`` device (no
arithmetic, weights untouched), which also gives each insertion point's channel count and
catches modules that ``forward`` calls more than once (a shared ``ReLU``): inserting after
those would apply one block at several places, so they are skipped and reported.

``init="identity"`` makes the retrofitted network compute exactly what it computed before, so
fine-tuning starts from the pretrained function: the last SE FC starts at zero and the gate is
divided by its value at zero, so each excitation starts at exactly 1 (for the sigmoid gate this
is ``2 * sigmoid``, range (0, 2), the SE gate of NF-Nets, Brock et al. 2021); inserted BN layers
start as the identity in eval mode (mean 0, variance 1 - eps, unit scale, zero shift). With
``init="default"`` the gate is the paper's sigmoid, which starts near 0.5 and halves every
recalibrated activation.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import warnings
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UserInputError, UserTypeError
from ..layers.se import SEConfig, SqueezeExcite
from ..validation import check_choice

__all__ = ["retrofit", "retrofit_from_config", "Retrofitted", "RetrofitReport", "Insertion", "UnitGate", "keras_param_count",
           "ACTIVATION_TYPES"]

# Modules counted as "a convolution's activation" by ``conv_activations=True``.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
)
INITS = ("default", "identity")


class UnitGate(nn.Module):
    """``gate(z) / gate(0)``: a gate rescaled to be exactly 1 where its input is 0."""

    def __init__(self, gate: nn.Module) -> None:
        super().__init__()
        self.inner = gate
        at_zero = float(gate(torch.zeros(())))
        if at_zero <= 0:
            raise UserInputError(
                f"init='identity' needs a gate that is positive at 0 (sigmoid, hard_sigmoid); "
                f"{type(gate).__name__} gives {at_zero}"
            )
        self.at_zero = at_zero

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner(z) / self.at_zero

    def extra_repr(self) -> str:
        return f"scale={1 / self.at_zero:g}"


class Retrofitted(nn.Module):
    """A module followed by the blocks inserted after it: ``se(bn(module(x)))``."""

    def __init__(self, module: nn.Module, bn: nn.Module, se: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.bn = bn
        self.se = se

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.se(self.bn(self.module(*args, **kwargs)))


@dataclasses.dataclass(frozen=True)
class Insertion:
    """Blocks inserted after the module ``name`` (its qualified name before retrofitting); the
    module itself now lives at ``name + ".module"``."""

    name: str
    channels: int
    added: tuple[str, ...]  # "bn", "se" in the order they run
    params: int


@dataclasses.dataclass
class RetrofitReport:
    """What :func:`retrofit` inserted, and which selected modules it left alone and why."""

    inserted: list[Insertion]
    skipped: list[tuple[str, str]]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.inserted]

    @property
    def params_added(self) -> int:
        return sum(i.params for i in self.inserted)

    def __str__(self) -> str:
        lines = [f"inserted after {len(self.inserted)} module(s), +{self.params_added:,} parameters:"]
        lines += [f"  {i.name}: {' + '.join(i.added)} on {i.channels} channels (+{i.params:,})"
                  for i in self.inserted]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


@dataclasses.dataclass
class _Call:
    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    count: int = 1


def _trace(model: nn.Module, input_size: Sequence[int]) -> dict[str, _Call]:
    """Every module's calls in the order their forward returns, from one pass on ``meta``."""
    calls: dict[str, _Call] = {}

    def hook(name: str):
        def record(module: nn.Module, _args: object, output: object) -> None:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
            if name in calls:
                calls[name].count += 1
            else:
                calls[name] = _Call(name, module, shape)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    tensors = {k: torch.empty(v.shape, dtype=v.dtype, device="meta")
               for k, v in [*model.named_parameters(), *model.named_buffers()]}
    modes = {m: m.training for m in model.modules()}  # restored module by module (frozen BN stays so)
    model.eval()
    try:
        functional_call(model, tensors, (torch.empty(1, *input_size, device="meta"),))
    except Exception as e:
        raise UserInputError(f"retrofit could not run the model on an input of size {tuple(input_size)} "
                             f"(pass the input_size it expects): {type(e).__name__}: {e}") from e
    finally:
        for m, mode in modes.items():
            m.training = mode
        for h in handles:
            h.remove()
    return calls


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels


def _conv_activations(calls: dict[str, _Call], depthwise: bool,
                      skipped: list[tuple[str, str]]) -> list[str]:
    """For each convolution, in call order, the first activation module called after it and
    before the next convolution."""
    targets: list[str] = []
    pending: str | None = None
    for call in calls.values():
        if list(call.module.children()):
            continue  # containers return after their children; only leaves give the order
        if isinstance(call.module, nn.Conv2d):
            if pending is not None:
                skipped.append((pending, "no activation module before the next convolution"))
            pending = None if (_is_depthwise(call.module) and not depthwise) else call.name
        elif isinstance(call.module, ACTIVATION_TYPES) and pending is not None:
            targets.append(call.name)
            pending = None
    if pending is not None:
        skipped.append((pending, "no activation module after it"))
    return targets


def _make_blocks(channels: int, se: SEConfig | None, bn: bool, init: str,
                 like: torch.Tensor | None) -> tuple[nn.Module, nn.Module]:
    norm: nn.Module = nn.BatchNorm2d(channels) if bn else nn.Identity()
    block: nn.Module = se.make(channels) if se is not None else nn.Identity()
    if init == "identity":
        if isinstance(norm, nn.BatchNorm2d):  # y = (x - 0) / sqrt(1 - eps + eps) * 1 + 0 = x
            with torch.no_grad():
                norm.running_var.fill_(1.0 - norm.eps)
        if isinstance(block, SqueezeExcite):
            with torch.no_grad():
                block.fc2.weight.zero_()
                if block.fc2.bias is not None:
                    block.fc2.bias.zero_()
            block.gate = UnitGate(block.gate)
    if like is not None:
        dtype = like.dtype if like.is_floating_point() else None
        norm.to(device=like.device, dtype=dtype)
        block.to(device=like.device, dtype=dtype)
    return norm, block


def retrofit(
    model: nn.Module,
    *,
    types: type[nn.Module] | tuple[type[nn.Module], ...] | None = None,
    names: str | None = None,
    regex: str | None = None,
    conv_activations: bool = False,
    depthwise: bool = True,
    se: SEConfig | None = SEConfig(),
    bn: bool = False,
    init: str = "default",
    input_size: Sequence[int] = (3, 224, 224),
) -> RetrofitReport:
    """Insert SE blocks (and/or BN layers) into ``model`` in place, after the selected modules.

    Select insertion points with exactly one of:
        types: after every module of these classes (e.g. ``nn.Conv2d``, ``nn.MaxPool2d``).
        names: after every module whose qualified name matches this glob (``"features.*"``).
        regex: after every module whose qualified name fully matches this regular expression.
        conv_activations: after the activation module that follows each convolution.

    Args:
        depthwise: also select depthwise convolutions (and, with ``conv_activations``, their
            activations); ``False`` reproduces the transfer study's SE-MobileNet (SE after pointwise convs).
        se: options of the inserted SE blocks (any field of the paper's block), or ``None`` to
            insert BN only.
        bn: insert a ``BatchNorm2d`` before each SE block (the transfer study's "BN after each conv").
        init: ``"default"`` or ``"identity"`` (the network then computes what it did before, in
            eval mode; see the module docstring for how).
        input_size: (C, H, W) of one input, for the tracing pass on the meta device.

    Returns a :class:`RetrofitReport`. Raises ``ValueError`` if nothing matches the selection or
    every match had to be skipped. The model's card (``pretrained_cfg``), if any, is replaced by
    ``card.with_retrofit(...)``, so ``card.build()`` inserts the same blocks; a retrofit a card cannot
    record (``types`` outside ``torch.nn``, a second retrofit) leaves the card as it was, with a warning.
    """
    selectors = {"types": types is not None, "names": names is not None, "regex": regex is not None,
                 "conv_activations": bool(conv_activations)}
    chosen = [k for k, on in selectors.items() if on]
    if len(chosen) != 1:
        raise UserInputError(f"retrofit needs exactly one of types=, names=, regex=, conv_activations=True; "
                             f"got {', '.join(chosen) or 'none'}")
    check_choice("init", init, INITS)
    if se is not None and not isinstance(se, SEConfig):
        raise UserTypeError(f"se must be an SEConfig or None, got {type(se).__name__}")
    if se is None and not bn:
        raise UserInputError("retrofit has nothing to insert: se=None and bn=False")
    if types is not None:
        types = types if isinstance(types, tuple) else (types,)
        if not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise UserTypeError(f"types must be nn.Module classes, got {types!r}")
    try:
        pattern = re.compile(regex) if regex is not None else None
    except re.error as err:
        raise UserInputError(f"retrofit: regex={regex!r} is not a valid regular expression: {err}") from None

    # Never select inside an existing SE block or a wrapper a previous retrofit inserted.
    inside = [n + "." for n, m in model.named_modules() if n and isinstance(m, SqueezeExcite)]
    inside += [f"{n}.{part}" for n, m in model.named_modules() if isinstance(m, Retrofitted)
               for part in ("bn", "se")]
    all_names = [n for n, _ in model.named_modules() if n and not any(n.startswith(p) for p in inside)]
    calls = _trace(model, input_size)
    calls = {n: c for n, c in calls.items() if n in set(all_names)}
    skipped: list[tuple[str, str]] = []

    if conv_activations:
        targets = _conv_activations(calls, depthwise, skipped)
        described = "conv_activations=True"
    else:
        modules = dict(model.named_modules())
        if types is not None:
            targets = [n for n in all_names if isinstance(modules[n], types)]
            if not depthwise:
                targets = [n for n in targets if not _is_depthwise(modules[n])]
            described = f"types={tuple(t.__name__ for t in types)}"
        elif names is not None:
            targets = [n for n in all_names if fnmatch.fnmatchcase(n, names)]
            described = f"names={names!r}"
        else:
            targets = [n for n in all_names if pattern.fullmatch(n)]  # type: ignore[union-attr]
            described = f"regex={regex!r}"
    if not targets:
        example = ", ".join(all_names[:8]) + (", ..." if len(all_names) > 8 else "")
        raise UserInputError(f"retrofit: no module of {type(model).__name__} matches {described}"
                             + (f"; skipped: {skipped}" if skipped else "") + f". Module names: {example}")

    valid: list[tuple[str, int]] = []
    for name in targets:
        call = calls.get(name)
        if call is None:
            skipped.append((name, "not called by forward"))
        elif call.count > 1:
            skipped.append((name, f"called {call.count} times by forward (a shared module)"))
        elif call.shape is None or len(call.shape) != 4:
            skipped.append((name, f"output shape {call.shape} is not (N, C, H, W)"))
        else:
            valid.append((name, call.shape[1]))
    if not valid:
        raise UserInputError(f"retrofit: every module matching {described} had to be skipped: "
                             + "; ".join(f"{n}: {why}" for n, why in skipped))

    inserted = []
    reference = next(iter([*model.parameters(), *model.buffers()]), None)
    # Deepest first, so a wrapped child never changes the path of a target still to come.
    for name, channels in sorted(valid, key=lambda t: t[0].count("."), reverse=True):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        original = getattr(parent, attr)
        like = next(iter([*original.parameters(), *original.buffers()]), reference)
        norm, block = _make_blocks(channels, se, bn, init, like)
        norm.train(original.training)  # a network retrofitted in eval mode stays in eval mode
        block.train(original.training)
        setattr(parent, attr, Retrofitted(original, norm, block))
        added = tuple(k for k, m in (("bn", norm), ("se", block)) if not isinstance(m, nn.Identity))
        params = sum(p.numel() for m in (norm, block) for p in m.parameters())
        inserted.append(Insertion(name, channels, added, params))
    order = {n: i for i, (n, _) in enumerate(valid)}
    inserted.sort(key=lambda i: order[i.name])
    _update_card(model, {"types": types, "names": names, "regex": regex, "conv_activations": bool(conv_activations),
                         "depthwise": depthwise, "se": se, "bn": bn, "init": init})
    return RetrofitReport(inserted, skipped)


def _update_card(model: nn.Module, options: dict[str, Any]) -> None:
    # The card follows the network (as reset_classifier's does), through the card's own update.
    card = getattr(model, "pretrained_cfg", None)
    update = getattr(card, "with_retrofit", None)
    if update is None:
        return
    problem = None
    types = options.pop("types")
    if types is not None:
        if any(getattr(nn, t.__name__, None) is not t for t in types):
            problem = f"types {[t.__name__ for t in types]} are not all torch.nn classes"
        options["types"] = [t.__name__ for t in types]
    se = options["se"]
    if se is not None:  # the fields that differ from the defaults, as a config writes them
        default = SEConfig()
        options["se"] = {f.name: getattr(se, f.name) for f in dataclasses.fields(se)
                         if getattr(se, f.name) != getattr(default, f.name)}
    spec = {k: v for k, v in options.items() if v is not None or k == "se"}
    if problem is None:
        try:
            model.pretrained_cfg = model.default_cfg = update(spec)
            return
        except UserInputError as e:
            problem = str(e)
    warnings.warn(f"retrofit: the model's card cannot record these blocks ({problem}); card.build() "
                  f"builds the network without them", stacklevel=3)


def keras_param_count(model: nn.Module) -> int:
    """Parameters counted as Keras counts them: trainable and non-trainable weights, i.e. the
    parameters plus each BN layer's moving mean and variance (how the transfer study counts, docs/experiments.md)."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None)
    return params + stats


SPEC_KEYS = ("types", "names", "regex", "conv_activations", "depthwise", "se", "bn", "init")


def retrofit_from_config(model: nn.Module, spec: Mapping[str, Any], input_size: Sequence[int]) -> RetrofitReport:
    """:func:`retrofit` driven by a plain mapping, as written in a training config or checkpoint
    (``model.retrofit``). ``types`` are ``torch.nn`` class names; ``se`` is a mapping of
    :class:`SEConfig` fields (``{}`` for the defaults) or ``None`` for BN only. Example::

        {"conv_activations": True, "se": {"reduction": 8}, "bn": False, "init": "identity"}
    """
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise UserInputError(f"model.retrofit: unknown key(s) {unknown}; allowed: {', '.join(SPEC_KEYS)}")
    kwargs: dict[str, Any] = {k: v for k, v in spec.items() if k not in ("types", "se")}
    if "types" in spec:
        names = [spec["types"]] if isinstance(spec["types"], str) else list(spec["types"])
        bad = [n for n in names if not (isinstance(getattr(nn, str(n), None), type)
                                        and issubclass(getattr(nn, n), nn.Module))]
        if bad:
            raise UserInputError(f"model.retrofit.types: {bad} are not torch.nn module classes")
        kwargs["types"] = tuple(getattr(nn, n) for n in names)
    se = spec.get("se", {})
    if se is not None and not isinstance(se, Mapping):
        raise UserInputError(f"model.retrofit.se must be a mapping of SE options or null, got {se!r}")
    kwargs["se"] = None if se is None else SEConfig().replace(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in se.items()})
    return retrofit(model, input_size=tuple(input_size), **kwargs)
