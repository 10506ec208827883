"""``senet report DIR...``: one Markdown page over many run directories.

It finds every training run (a directory with ``metrics.jsonl``) below the given directories,
names each by its path below their common folder (``compare/se_resnet20/seed0``: unique where
a folder name such as ``seed0`` repeats), tabulates their final and best errors with the config
and environment stored beside them, overlays their error curves (one figure per dataset, each
run its own colour), and includes the reports of comparisons, sweeps and excitation
studies it finds (``report.md`` beside ``results.json`` or ``excitations.json``). A run with
fewer epochs than its ``config.yaml`` asks for (killed, diverged or still training) is flagged.
The page is written to the DIRs' common folder (``senet_report.md``, a name no run or study uses)
unless another file is given, through :mod:`senet.atomic` like every other file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..atomic import atomic_write_bytes, check_writable
from ..errors import BadFileError, MissingPathError, UserInputError
from ..train.reconcile import best_epoch
from ..weights.fileformat import read_file_metadata
from .report import distinct_colors

__all__ = ["TrainingRun", "find_runs", "run_labels", "aggregate_report", "default_output", "DEFAULT_NAME"]

DEFAULT_NAME = "senet_report.md"

MAX_PLOTTED = 24  # runs per figure; more lines than this are unreadable


@dataclasses.dataclass
class TrainingRun:
    path: Path
    history: list[dict[str, Any]]
    model: str
    dataset: str
    params: int | None
    device: str
    epochs: int | None = None  # what config.yaml asks for; None when it does not say
    classes: int | None = None  # from the checkpoint's card; None without a checkpoint

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1]

    @property
    def best(self) -> dict[str, Any]:
        """The row of the epoch whose checkpoint is ``best`` (the latest of tied epochs, as training saves it)."""
        epoch = best_epoch(self.history)
        return next(r for r in self.history if r["epoch"] == epoch)

    @property
    def complete(self) -> bool:
        """False when the run stopped before the epochs its config asks for (killed, diverged, still training)."""
        return self.epochs is None or self.final["epoch"] >= self.epochs


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadFileError(f"{path} is not a UTF-8 text file (byte {e.start} is not UTF-8); it is not a file "
                           f"senet train wrote, or it was damaged") from None


def _read_json(path: Path, lines: bool = False) -> Any:
    """``path``'s JSON value (``lines=True``: the list of one value per line, as in ``metrics.jsonl``)."""
    text = _read_text(path)
    try:
        return [json.loads(t) for t in text.splitlines() if t.strip()] if lines else json.loads(text)
    except json.JSONDecodeError as e:
        raise BadFileError(f"{path} is not valid JSON ({e.msg}); it was damaged or edited") from None


def _config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        raise BadFileError(f"{path} is not valid YAML" + (f" (line {where.line + 1})" if where else "")) from None
    return config if isinstance(config, dict) else {}


def _classes(path: Path) -> int | None:
    for tag in ("best", "last"):
        card = read_file_metadata(path / "checkpoints" / f"{tag}.safetensors").get("senet")
        try:
            classes = json.loads(card)["card"]["num_classes"] if card else None
        except (ValueError, KeyError, TypeError):
            classes = None  # a damaged checkpoint is for senet eval to name; the table only loses top-5's "-"
        if isinstance(classes, int):
            return classes
    return None


def _read_run(path: Path) -> TrainingRun | None:
    """The run in ``path``; None when it has no epoch yet. A run file that cannot be read is named
    (:class:`BadFileError`), never skipped in silence."""
    history = _read_json(path / "metrics.jsonl", lines=True)
    if not history:
        return None
    env = _read_json(path / "env.json") if (path / "env.json").is_file() else {}
    env = env if isinstance(env, dict) else {}
    config = _config(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    epochs = config.get("epochs")
    return TrainingRun(path, history, str(model.get("name") or ""), str(env.get("dataset", "")),
                       env.get("model_params"), str(env.get("device", "")),
                       epochs if isinstance(epochs, int) else None, _classes(path))


def find_runs(dirs: Sequence[str | Path]) -> list[TrainingRun]:
    """Every training run at or below ``dirs``, sorted by path. A missing directory is an error."""
    runs = []
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise MissingPathError(f"no such folder: {d}")
        if not d.is_dir():
            raise UserInputError(f"{d} is a file; give run directories or folders holding them")
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _embed(report: Path, out_dir: Path, level: str = "##") -> str:
    """A sub-report's text, its headings demoted and its image links made relative to ``out_dir``."""
    rel = Path(os.path.relpath(report.parent, out_dir))
    lines = []
    for line in _read_text(report).splitlines():
        if line.startswith("#"):
            line = level + line
        if line.startswith("![") and "](" in line:
            label, target = line.split("](", 1)
            line = f"{label}]({(rel / target.rstrip(')')).as_posix()})"
        lines.append(line)
    return "\n".join(lines)


def default_output(dirs: Sequence[str | Path]) -> Path:
    """Where the page goes unless told: :data:`DEFAULT_NAME` in the DIRs' common folder, beside the
    runs it reports on (as ``senet excitations`` writes beside its run), wherever the command is started."""
    folders = [os.path.abspath(d) for d in dirs]
    common = os.path.commonpath(folders) if folders else "."
    return Path(os.path.relpath(common)) / DEFAULT_NAME


def _check_output(out: Path) -> None:
    # Before any reading or drawing: the page's folder, or the nearest one that exists, takes files.
    existing = out.parent
    while str(existing) not in ("", ".") and not existing.exists():
        existing = existing.parent
    check_writable(out if existing == out.parent else existing / ".senet-report-check")


def aggregate_report(dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write the aggregated page to ``out`` (a ``.md`` file; its figures go beside it; default:
    :func:`default_output`) and return its path."""
    runs = find_runs(dirs)
    out = Path(out) if out is not None else default_output(dirs)
    _check_output(out)
    studies = sorted({p.parent for d in dirs for name in ("results.json", "excitations.json")
                      for p in Path(d).rglob(name) if (p.parent / "report.md").is_file()})
    if not runs and not studies:
        raise UserInputError(f"no training runs (metrics.jsonl) or reports found under {', '.join(map(str, dirs))}")
    check_writable(out, create_folder=True)  # only now: a failed command leaves no folder behind
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
                epochs = str(r.final["epoch"]) if r.complete else f"{r.final['epoch']} of {r.epochs} (incomplete)"
                # Top-5 error means something only with more than 5 classes (it is 0 otherwise).
                top5 = "-" if r.classes is not None and r.classes <= 5 else f"{r.final['top5_err']:.2f}"
                parts.append(f"| [{labels[r.path]}]({rel}) | {r.model} | {r.dataset} | {epochs} | {params} | "
                             f"{r.final['top1_err']:.2f} | {top5} | {r.best['top1_err']:.2f} "
                             f"({r.best['epoch']}) | {sum(h['time_s'] for h in r.history):.0f} |")
            parts.append("")
            stopped = [labels[r.path] for r in group if not r.complete]
            if stopped:
                parts += ["**Incomplete** (fewer epochs than their config.yaml asks for: interrupted, diverged or "
                          "still training; \"final\" is their last epoch so far, and `senet train --resume RUN` "
                          f"continues one): {', '.join(stopped)}.", ""]
            if len(group) > MAX_PLOTTED:
                parts += [f"({len(group)} runs: too many for one readable figure; none drawn.)", ""]
                continue
            name = out.stem + "_curves" + (f"_{_slug(dataset)}" if len(by_data) > 1 else "") + ".png"
            fig = _plot(group, labels, out.with_name(name), dataset)
            parts += [f"![top-1 error of the runs on {dataset or 'unknown data'}]({fig.name})", ""]
    for study in studies:
        parts += [_embed(study / "report.md", out.parent), ""]
    atomic_write_bytes(out, "\n".join(parts).encode())
    return out
