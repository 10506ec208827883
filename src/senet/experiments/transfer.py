"""Transfer learning with retrofitted SE (the transfer-learning study, docs/experiments.md): fine-tune a trained plain network as it is,
with SE inserted by :func:`senet.retrofit` and identity-preserving init, and with SE at the
paper's default init (a sigmoid near 0.5 that halves every recalibrated activation at first)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .sweep import Sweep, merge, sweep_from_dict

__all__ = ["transfer_sweep"]


def transfer_sweep(
    model: str,
    weights: str,
    *,
    source: str = "senet",
    overrides: Mapping[str, Any] | None = None,
    data: str | None = None,
    recipe: str = "rmsprop_transfer",
    config: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (0,),
    reduction: float = 8,
    bn: bool = False,
    depthwise: bool = True,
) -> Sweep:
    """Cells: plain fine-tune, [+BN,] +SE with identity init, +SE with default init. Each
    starts from ``weights`` (the plain ``model`` with ``overrides``); SE (r = ``reduction``, as in
    the transfer study) goes after every convolution's activation, with BN before it if ``bn``."""
    where = {"conv_activations": True, "depthwise": depthwise, "bn": bn}
    se = {"reduction": reduction}
    plus = "+BN+SE" if bn else "+SE"
    cells = [{"label": "plain fine-tune", "config": {}}]
    if bn:
        cells.append({"label": "+BN", "config": {"model": {"retrofit": {**where, "se": None, "init": "identity"}}}})
    cells += [
        {"label": f"{plus}, identity init", "config": {"model": {"retrofit": {**where, "se": se, "init": "identity"}}}},
        {"label": f"{plus}, default init", "config": {"model": {"retrofit": {**where, "se": se, "init": "default"}}}},
    ]
    base: dict[str, Any] = {"model": {"name": model, "overrides": dict(overrides or {}), "weights": weights,
                                      "weights_source": source}}
    if data is not None:
        base["data"] = {"dataset": data}

    return sweep_from_dict({
        "name": f"Transfer learning from {model} ({weights})",
        "description": "Seed 003's study: the same pretrained plain network fine-tuned as it is and with SE "
                       f"retrofitted after every convolution's activation (r = {reduction:g}), starting from an "
                       "identity-preserving SE init or from the default init.",
        "recipe": recipe, "config": merge(base, config or {}), "seeds": list(seeds), "cells": cells,
    }, where="transfer")
