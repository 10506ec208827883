"""The model registry: one name per network, its builder and default arguments.

A registered model is data (builder + arguments), so ``create_model`` can check overrides
against the builder's signature and fail at the caller with a message naming the argument,
and tests can parametrise over ``list_models()``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from torch import nn

from ..errors import UnknownNameError, UserInputError, UserTypeError
from ..layers.se import SEConfig

if TYPE_CHECKING:  # pragma: no cover
    from ..published import PretrainedConfig

__all__ = ["ModelSpec", "register_model", "unregister_model", "list_models", "get_model_spec", "UnknownModelError",
           "resolve_name", "list_pretrained", "aliases_of"]


class UnknownModelError(UnknownNameError):
    """Raised for a model name that is not registered; the message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered network: ``builder(**defaults)`` builds it.

    ``family`` groups models for listing (e.g. ``"resnet"``, ``"cifar"``); ``source`` says which
    paper table or published layout the defaults reproduce.
    """

    name: str
    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any]
    family: str
    description: str
    source: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    pretrained: tuple["PretrainedConfig", ...] = ()
    layout: str = "timm"
    aliases: tuple[str, ...] = ()

    @property
    def has_se(self) -> bool:
        return self.defaults.get("se") is not None

    def arguments(self) -> list[str]:
        """The keyword arguments an override may set."""
        params = inspect.signature(self.builder).parameters.values()
        names = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if "se" in names:
            names += [f"se_{f.name}" for f in dataclasses.fields(SEConfig)]
        return names

    def resolve(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``overrides`` into the defaults, refusing unknown or conflicting arguments."""
        allowed = self.arguments()
        kwargs = dict(self.defaults)
        se_fields: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=3)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise UserTypeError(
                    f"create_model({self.name!r}) got an unknown argument {key!r}.{hint} "
                    f"Allowed: {', '.join(allowed)}"
                )
            if key.startswith("se_"):
                se_fields[key[3:]] = value
            else:
                kwargs[key] = value
        if "se" in kwargs and kwargs["se"] is not None and not isinstance(kwargs["se"], SEConfig):
            raise UserTypeError(f"se must be an SEConfig or None, got {type(kwargs['se']).__name__}")
        if se_fields:
            if kwargs.get("se") is None:
                raise UserInputError(
                    f"{self.name!r} has no SE blocks, so {', '.join('se_' + k for k in se_fields)} cannot apply; "
                    f"pass se=SEConfig(...) to add them, or use its SE twin"
                )
            kwargs["se"] = kwargs["se"].replace(**se_fields)
        return kwargs

    def build(self, **overrides: Any) -> nn.Module:
        """The network with ``overrides``; ``num_classes=0`` builds it headless (``reset_classifier(0)``:
        it returns pooled features, or with ``global_pool=""`` the feature map), as timm does."""
        headless = overrides.get("num_classes") == 0
        pool = None
        if headless:  # built with a classifier (and so a pooling), then dropped, as timm's reset_classifier(0)
            pool = overrides.get("global_pool")
            overrides = {k: v for k, v in overrides.items() if k not in ("num_classes", "global_pool")}
        model = self.builder(**self.resolve(overrides))
        if headless:
            model.reset_classifier(0, pool)
        return model

    def pretrained_config(self, tag: str | None = None) -> "PretrainedConfig":
        """The published weights named ``tag`` (default: the first listed)."""
        if not self.pretrained:
            have = ", ".join(list_models(pretrained=True, include_tags=False))
            raise UserInputError(f"{self.name!r} has no published weights; models that have them: {have}. "
                                 f"Pass pretrained='<path>' to load a file.")
        if tag is None:
            return self.pretrained[0]
        for cfg in self.pretrained:
            if cfg.tag == tag:
                return cfg
        raise UserInputError(f"{self.name!r} has no pretrained tag {tag!r}; known: "
                             f"{', '.join(c.tag for c in self.pretrained)}")


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}  # timm's (and Cadene's) model names -> ours


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    family: str,
    description: str,
    source: str = "",
    input_size: tuple[int, int, int] = (3, 224, 224),
    pretrained: Sequence["PretrainedConfig"] = (),
    layout: str = "timm",
    aliases: Sequence[str] = (),
    **defaults: Any,
) -> ModelSpec:
    """Register ``name`` as ``builder(**defaults)``. A name can be registered only once.

    This is also how users add networks of their own, which then work with every tool of the
    package (``senet summary``, training, analysis). ``input_size`` is the (C, H, W) the network
    is meant for; cost reports use it by default. ``pretrained`` lists its published weights
    (the first is the default), ``layout`` is the :mod:`senet.weights` converter a weights file
    for it needs (``"timm"`` or ``"legacy"``), and ``aliases`` are other names it answers to
    (timm's, e.g. ``"seresnet50"``).
    """
    for n in (name, *aliases):
        if n in _REGISTRY or n in _ALIASES:
            raise UserInputError(f"a model or alias named {n!r} is already registered")
    spec = ModelSpec(name, builder, dict(defaults), family, description, source, tuple(input_size),
                     tuple(pretrained), layout, tuple(aliases))
    unknown = [k for k in defaults if k not in spec.arguments()]
    if unknown:  # fail now, not at first use, if the defaults do not fit the builder
        raise UserInputError(f"register_model({name!r}): {getattr(builder, '__name__', builder)} takes no "
                             f"argument(s) {', '.join(unknown)}")
    _REGISTRY[name] = spec
    _ALIASES.update({a: name for a in aliases})
    return spec


def unregister_model(name: str) -> ModelSpec:
    """Remove ``name`` (and its other names) from the registry and return its entry: for a notebook that
    redefines a network, and for tests that register one for their own duration."""
    spec = get_model_spec(name)
    del _REGISTRY[spec.name]
    for alias in spec.aliases:
        _ALIASES.pop(alias, None)
    return spec


def _patterns(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def list_models(filter: str | Sequence[str] = "", module: str | None = None, pretrained: bool = False,
                exclude_filters: str | Sequence[str] = (), include_tags: bool | None = None, *,
                family: str | None = None) -> list[str]:
    """Registered model names, sorted, as timm's ``list_models`` selects them.

    ``filter`` is a shell-style wildcard or a list of them (``"se_resnet*"``); a model matches when its
    name or one of its other names (timm's ``seresnet50``) does, so ``"seresnet*"`` finds the
    ``se_resnet*`` models. ``module`` keeps one family (``"resnet"``, ``"cifar"``, ...; ``family`` is the
    same). ``pretrained=True`` keeps models with published weights and, unless ``include_tags=False``,
    lists each set of weights as ``name.tag`` (``"se_resnet50.a1_in1k"``, a name ``create_model``
    accepts); tags match the filter too (``"seresnet50.a1*"``). ``exclude_filters`` removes matches.
    """
    family = family or module
    include = pretrained if include_tags is None else include_tags
    wanted, unwanted = _patterns(filter), _patterns(exclude_filters)
    out = []
    for name in sorted(_REGISTRY):
        spec = _REGISTRY[name]
        if family and spec.family != family:
            continue
        if pretrained and not spec.pretrained:
            continue
        bases = (name, *spec.aliases)
        entries = [(name, bases)]
        if include:
            entries = [(f"{name}.{c.tag}", tuple(f"{b}.{c.tag}" for b in bases) + bases) for c in spec.pretrained]
        for shown, forms in entries:
            if wanted and not any(fnmatch.fnmatchcase(f, w) for f in forms for w in wanted):
                continue
            if any(fnmatch.fnmatchcase(f, u) for f in forms for u in unwanted):
                continue
            out.append(shown)
    return out


def resolve_name(name: str) -> tuple[str, str | None]:
    """``(registered name, pretrained tag or None)`` for a name, an alias (timm's ``seresnet50``)
    or either with timm's tag suffix (``"seresnet50.a1_in1k"``)."""
    if not isinstance(name, str):
        raise UserTypeError(f"a model name must be a str, got {type(name).__name__}")
    base, _, tag = name.partition(".")
    base = _ALIASES.get(base, base)
    if base not in _REGISTRY:
        pool = list(_REGISTRY) + list(_ALIASES)
        close = difflib.get_close_matches(name.partition(".")[0], pool, n=5, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `senet models` or senet.list_models() lists all {len(_REGISTRY)}."
        )
    return base, (tag or None)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (or an alias); an unknown name fails with the closest names."""
    base, tag = resolve_name(name)
    spec = _REGISTRY[base]
    if tag is not None:
        spec.pretrained_config(tag)  # an unknown tag fails here, naming the known ones
    return spec


def list_pretrained(filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = ()) -> list[str]:
    """Every set of published weights as ``name.tag`` (timm's ``list_pretrained``); each name works
    with ``create_model(name, pretrained=True)``. Filters as in :func:`list_models`."""
    return list_models(filter, pretrained=True, exclude_filters=exclude_filters)


def aliases_of(name: str) -> tuple[str, ...]:
    """The other names (timm's) a registered model answers to."""
    return get_model_spec(name).aliases
