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
from typing import Any, Callable, Mapping

from torch import nn

from ..layers.se import SEConfig

__all__ = ["ModelSpec", "register_model", "list_models", "get_model_spec", "create_model", "UnknownModelError"]


class UnknownModelError(KeyError):
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
                raise TypeError(
                    f"create_model({self.name!r}) got an unknown argument {key!r}.{hint} "
                    f"Allowed: {', '.join(allowed)}"
                )
            if key.startswith("se_"):
                se_fields[key[3:]] = value
            else:
                kwargs[key] = value
        if "se" in kwargs and kwargs["se"] is not None and not isinstance(kwargs["se"], SEConfig):
            raise TypeError(f"se must be an SEConfig or None, got {type(kwargs['se']).__name__}")
        if se_fields:
            if kwargs.get("se") is None:
                raise ValueError(
                    f"{self.name!r} has no SE blocks, so {', '.join('se_' + k for k in se_fields)} cannot apply; "
                    f"pass se=SEConfig(...) to add them, or use its SE twin"
                )
            kwargs["se"] = kwargs["se"].replace(**se_fields)
        return kwargs

    def build(self, **overrides: Any) -> nn.Module:
        return self.builder(**self.resolve(overrides))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    *,
    family: str,
    description: str,
    source: str = "",
    input_size: tuple[int, int, int] = (3, 224, 224),
    **defaults: Any,
) -> ModelSpec:
    """Register ``name`` as ``builder(**defaults)``. A name can be registered only once.

    This is also how users add networks of their own, which then work with every tool of the
    package (``senet summary``, training, analysis). ``input_size`` is the (C, H, W) the network
    is meant for; cost reports use it by default.
    """
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].description})")
    spec = ModelSpec(name, builder, dict(defaults), family, description, source, tuple(input_size))
    unknown = [k for k in defaults if k not in spec.arguments()]
    if unknown:  # fail now, not at first use, if the defaults do not fit the builder
        raise ValueError(f"register_model({name!r}): {getattr(builder, '__name__', builder)} takes no "
                         f"argument(s) {', '.join(unknown)}")
    _REGISTRY[name] = spec
    return spec


def _ensure_loaded() -> None:
    # The catalogues register on import; importing them lazily keeps `import senet` cheap.
    from . import catalog  # noqa: F401


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is a shell-style wildcard (``"se_resnet*"``)."""
    _ensure_loaded()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if family:
        names = [n for n in names if _REGISTRY[n].family == family]
    return names


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; an unknown name fails with the closest registered names."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} `senet models` or senet.list_models() lists all {len(_REGISTRY)}."
        ) from None


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; keyword ``overrides`` replace its default arguments.

    SE options can be overridden field by field with an ``se_`` prefix
    (``create_model("se_resnet50", se_reduction=8, se_stages=(1, 2, 3))``), and ``se=None``
    builds the exact plain baseline of any SE model.
    """
    return get_model_spec(name).build(**overrides)
