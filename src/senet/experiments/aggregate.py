"""``senet report DIR...``: one Markdown page over many run directories.

It finds every training run (a directory with ``metrics.jsonl``) below the given directories,
names each by its path below their common folder (``compare/se_resnet20/seed0``: unique where
a folder name such as ``seed0`` repeats), tabulates their final and best errors with the config
and environment stored beside them, overlays their error curves (one figure per dataset, each
run its own colour), and includes the reports of comparisons, sweeps and excitation
studies it finds (``report.md`` beside ``results.json`` or ``excitations.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence
from ..errors import MissingPathError, UserInputError
from .report import distinct_colors

__all__ = ["TrainingRun", "find_runs", "run_labels", "aggregate_report"]

MAX_PLOTTED = 24  # runs per figure; more lines than this are unreadable


@dataclasses.dataclass
class TrainingRun:
    path: Path
    history: list[dict[str, Any]]
    model: str
    dataset: str
    params: int | None
    device: str

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def best(self) -> dict[str, Any]:
        return min(self.history, key=lambda r: r["top1_err"])


def _read_run(path: Path) -> TrainingRun | None:
    try:
        history = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    if not history:
        return None
    env: dict[str, Any] = {}
    if (path / "env.json").is_file():
        try:
            env = json.loads((path / "env.json").read_text())
        except json.JSONDecodeError:
            env = {}
    model = ""
    if (path / "config.yaml").is_file():
        import yaml

        try:
            model = ((yaml.safe_load((path / "config.yaml").read_text()) or {}).get("model") or {}).get("name", "")
        except yaml.YAMLError:
            model = ""
    return TrainingRun(path, history, model, str(env.get("dataset", "")), env.get("model_params"),
                       str(env.get("device", "")))


def find_runs(dirs: Sequence[str | Path]) -> list[TrainingRun]:
    """Every training run at or below ``dirs``, sorted by path. A missing directory is an error."""
    runs = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise MissingPathError(f"not a directory: {d}")
        for metrics in sorted(d.rglob("metrics.jsonl")):
            run = _read_run(metrics.parent)
            if run is not None:
                runs.append(run)
    return runs


def run_labels(runs: Sequence[TrainingRun]) -> dict[Path, str]:
    """A unique, readable label per run: its path below the runs' common folder
    (``compare-resnet20-se_resnet20/se_resnet20/seed0``); a lone run is labelled by its name."""
    paths = [r.path.resolve() for r in runs]
    if len(set(paths)) < 2:
        return {r.path: r.path.resolve().name for r in runs}
    common = Path(os.path.commonpath(paths))
    return {r.path: p.relative_to(common).as_posix() for r, p in zip(runs, paths)}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "data"


def _plot(runs: Sequence[TrainingRun], labels: dict[Path, str], path: Path, dataset: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run, color in zip(runs, distinct_colors(len(runs))):
        label = labels[run.path]
        if run.model and run.model not in label:
            label += f" ({run.model})"
        ax.plot([h["epoch"] for h in run.history], [h["top1_err"] for h in run.history], "o-", ms=2.5, lw=1,
                color=color, label=label)
    ax.set(xlabel="epoch", ylabel="validation top-1 error (%)", title=f"{dataset or 'unknown data'}: top-1 error per epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _embed(report: Path, out_dir: Path, level: str = "##") -> str:
    """A sub-report's text, its headings demoted and its image links made relative to ``out_dir``."""
    rel = Path(os.path.relpath(report.parent, out_dir))
    lines = []
    for line in report.read_text().splitlines():
        if line.startswith("#"):
            line = level + line
        if line.startswith("![") and "](" in line:
            label, target = line.split("](", 1)
            line = f"{label}]({(rel / target.rstrip(')')).as_posix()})"
        lines.append(line)
    return "\n".join(lines)


def aggregate_report(dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the aggregated page to ``out`` (a ``.md`` file; its figure goes beside it)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = find_runs(dirs)
    studies = sorted({p.parent for d in dirs for name in ("results.json", "excitations.json")
                      for p in Path(d).rglob(name) if (p.parent / "report.md").is_file()})
    if not runs and not studies:
        raise UserInputError(f"no training runs (metrics.jsonl) or reports found under {', '.join(map(str, dirs))}")
    parts = [f"# Report: {', '.join(map(str, dirs))}", ""]
    if runs:
        labels = run_labels(runs)
        by_data: dict[str, list[TrainingRun]] = {}
        for r in runs:
            by_data.setdefault(r.dataset, []).append(r)
        parts += [f"{len(runs)} training run(s) on {len(by_data)} dataset(s). Errors in percent on each run's test "
                  "split; \"best\" is the lowest top-1 error over epochs.", ""]
        for dataset, group in by_data.items():
            if len(by_data) > 1:
                parts += [f"## {dataset or 'unknown data'}", ""]
            parts += ["| run | model | data | epochs | params | final top-1 | final top-5 | best top-1 (epoch) | "
                      "train time (s) |", "|---|---|---|---|---|---|---|---|---|"]
            for r in group:
                rel = os.path.relpath(r.path, out.parent)
                params = f"{r.params:,}" if isinstance(r.params, int) else ""
                parts.append(f"| [{labels[r.path]}]({rel}) | {r.model} | {r.dataset} | {r.final['epoch']} | {params} | "
                             f"{r.final['top1_err']:.2f} | {r.final['top5_err']:.2f} | {r.best['top1_err']:.2f} "
                             f"({r.best['epoch']}) | {sum(h['time_s'] for h in r.history):.0f} |")
            parts.append("")
            if len(group) > MAX_PLOTTED:
                parts += [f"({len(group)} runs: too many for one readable figure; none drawn.)", ""]
                continue
            name = out.stem + "_curves" + (f"_{_slug(dataset)}" if len(by_data) > 1 else "") + ".png"
            fig = _plot(group, labels, out.with_name(name), dataset)
            parts += [f"![top-1 error of the runs on {dataset or 'unknown data'}]({fig.name})", ""]
    for study in studies:
        parts += [_embed(study / "report.md", out.parent), ""]
    out.write_text("\n".join(parts))
    return out
