"""Paired comparisons (docs/experiments.md): a baseline and its SE twin, same data, recipe and seeds."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import UserInputError
from ..models.registry import get_model_spec
from .sweep import Sweep, sweep_from_dict

__all__ = ["comparison_sweep", "DEFAULT_MODELS"]

DEFAULT_MODELS = ("resnet20", "se_resnet20")


def comparison_sweep(
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    recipe: str = "bundled",
    config: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
) -> Sweep:
    """A sweep whose cells are whole models; the first is the baseline the others are compared with.

    A single SE model name is paired with its exact plain baseline (the same network, se=None).
    """
    models = list(models)
    if len(models) == 1:
        if not get_model_spec(models[0]).has_se:
            raise UserInputError(f"{models[0]!r} has no SE blocks: give two or more models to compare")
        cells = [{"label": f"{models[0]} without SE", "config": {"model": {"name": models[0], "overrides": {"se": None}}}},
                 {"label": models[0], "config": {"model": {"name": models[0]}}}]
    else:
        for m in models:
            get_model_spec(m)  # unknown names fail here with the closest matches
        cells = [{"label": m, "config": {"model": {"name": m}}} for m in models]
    return sweep_from_dict({
        "name": f"Comparison: {' vs '.join(c['label'] for c in cells)}",
        "description": "Paired comparison: every model trains on the same data with the same recipe and seeds.",
        "recipe": recipe,
        "config": dict(config or {}),
        "seeds": list(seeds),
        "cells": cells,
    }, where="comparison")
