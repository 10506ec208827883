"""Paired comparisons (docs/experiments.md): a baseline and its SE twin, same data, recipe and seeds;
and the 2 x 2 question "does SE still help under another recipe?" (recipe x SE/plain, same seeds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_write_bytes
from ..errors import UserInputError
from ..models.registry import get_model_spec
from ..train.config import config_to_dict
from ..train.recipes import load_config
from .stats import difference, summarize
from .sweep import RunRecord, Sweep, sweep_from_dict

__all__ = ["comparison_sweep", "recipe_comparison_sweep", "recipe_table", "write_recipe_comparison",
           "DEFAULT_MODELS"]

DEFAULT_MODELS = ("resnet20", "se_resnet20")


def _model_cells(models: Sequence[str]) -> list[dict[str, Any]]:
    """The cells of a comparison of whole models; one SE model name is paired with its exact plain
    baseline (the same network, se=None)."""
    models = list(models)
    if len(models) == 1:
        if not get_model_spec(models[0]).has_se:
            raise UserInputError(f"{models[0]!r} has no SE blocks: give two or more models to compare")
        return [{"label": f"{models[0]} without SE", "config": {"model": {"name": models[0], "overrides": {"se": None}}}},
                {"label": models[0], "config": {"model": {"name": models[0]}}}]
    for m in models:
        get_model_spec(m)  # unknown names fail here with the closest matches
    return [{"label": m, "config": {"model": {"name": m}}} for m in models]


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
    cells = _model_cells(models)
    return sweep_from_dict({
        "name": f"Comparison: {' vs '.join(c['label'] for c in cells)}",
        "description": "Paired comparison: every model trains on the same data with the same recipe and seeds.",
        "recipe": recipe,
        "config": dict(config or {}),
        "seeds": list(seeds),
        "cells": cells,
    }, where="comparison")


def _cell_label(model_label: str, recipe: str) -> str:
    return f"{model_label} ({recipe})"


def recipe_comparison_sweep(recipes: Sequence[str], model: str = "se_resnet20", *, seeds: Sequence[int] = (0, 1, 2),
                            config: Mapping[str, Any] | None = None) -> Sweep:
    """``model`` with and without SE under each of ``recipes`` (names or YAML paths), over the same
    seeds: a ``len(recipes)`` x 2 sweep. Each cell carries its recipe's whole resolved config (so
    nothing of the first recipe leaks into the others), then ``config``, then the model."""
    if len(recipes) < 2:
        raise UserInputError(f"give two or more recipes to compare, got {list(recipes)}")
    cells = []
    for recipe in recipes:
        full = config_to_dict(load_config(recipe))
        full.pop("seed")
        for cell in _model_cells([model]):
            merged = {**full, **dict(config or {})}
            merged["model"] = {**full["model"], **cell["config"]["model"],
                               "overrides": {**full["model"]["overrides"], **cell["config"]["model"].get("overrides", {})}}
            cells.append({"label": _cell_label(cell["label"], recipe), "config": merged})
    return sweep_from_dict({
        "name": f"Does SE help under each recipe? {model}, {' vs '.join(recipes)}",
        "description": "Paired comparison: the network with and without SE under each recipe, same data and seeds.",
        "recipe": recipes[0],
        "seeds": list(seeds),
        "cells": cells,
    }, where="recipe comparison")


def _cell(summary_values: Sequence[float]) -> str:
    s = summarize(summary_values)
    return f"{s.mean:.2f} ± {s.stderr:.2f}" if s.n > 1 else f"{s.mean:.2f}"


def recipe_table(records: Mapping[str, Sequence[RunRecord]], recipes: Sequence[str], model: str) -> tuple[str, dict]:
    """The 2 x 2 page: for each recipe, plain and SE final/best top-1/top-5 error (mean ± standard
    error of the mean over seeds), and the SE gain (plain - SE, positive = SE better) with its
    Welch standard error and whether it exceeds twice that (``stats.difference``). Returns the
    Markdown and the same numbers as plain data (for results.json)."""
    metrics = (("final", "top1_err"), ("best", "top1_err"), ("final", "top5_err"), ("best", "top5_err"))
    head = ["recipe", "network", "final top-1", "best top-1", "final top-5", "best top-5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    gains, data = [], {}
    for recipe in recipes:
        plain = records.get(_cell_label(f"{model} without SE", recipe), [])
        se = records.get(_cell_label(model, recipe), [])
        data[recipe] = {}
        for name, recs in (("plain", plain), ("SE", se)):
            if not recs:
                lines.append(f"| {recipe} | {name} | not run | | | |")
                continue
            lines.append(f"| {recipe} | {name} | " + " | ".join(
                _cell([getattr(r, which)[key] for r in recs]) for which, key in metrics) + " |")
            data[recipe][name] = {f"{which}_{key}": [getattr(r, which)[key] for r in recs] for which, key in metrics}
        if plain and se:
            for which, key in metrics[:2]:
                d = difference([getattr(r, which)[key] for r in plain], [getattr(r, which)[key] for r in se])
                stderr = "unknown (one seed)" if math.isnan(d.stderr) else f"{d.stderr:.2f}"
                verdict = ("resolved (|gain| > 2 x standard error)" if d.resolved
                           else "not resolved" if math.isnan(d.stderr)
                           else "not resolved (|gain| <= 2 x standard error)")
                gains.append(f"- {recipe}, {which} top-1: SE gain {d.delta:+.2f} points (standard error {stderr}); "
                             f"{verdict}")
                data[recipe][f"se_gain_{which}_{key}"] = {"delta": d.delta, "stderr": d.stderr, "resolved": d.resolved}
    text = "\n".join(["## SE gain under each recipe", "",
                      "Errors in percent, mean ± standard error of the mean over seeds; SE gain = plain - SE "
                      "(positive: SE has the lower error).", "", *lines, "", *gains, ""])
    return text, data


def write_recipe_comparison(out: str | Path, records: Mapping[str, Sequence[RunRecord]], recipes: Sequence[str],
                            model: str) -> str:
    """Append the 2 x 2 table to ``out/report.md`` and its numbers to ``out/results.json`` (both
    written by the sweep's report first); return the table."""
    out = Path(out)
    text, data = recipe_table(records, recipes, model)
    report = out / "report.md"
    results = json.loads((out / "results.json").read_text())
    results["recipes"] = {"model": model, "recipes": list(recipes), "table": data}
    atomic_write_bytes(report, (report.read_text() + "\n" + text).encode())
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=1).encode())
    return text
