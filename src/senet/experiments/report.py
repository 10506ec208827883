"""Markdown reports and overlaid curves for sweeps and paired comparisons."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..atomic import atomic_write_bytes
from .stats import Summary, difference, summarize
from .sweep import RunRecord, Sweep

__all__ = ["sweep_table", "difference_statements", "plot_sweep_curves", "write_sweep_report", "distinct_colors",
           "describe_runs"]


def distinct_colors(n: int) -> list:
    """``n`` colours no two alike: matplotlib's tab10/tab20 while they suffice, then evenly
    spaced samples of a perceptual colormap (the default cycle repeats after 10)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def describe_runs(records: Mapping[str, Sequence[RunRecord]]) -> dict[str, str]:
    """What the runs actually used, for headers: ``{"dataset": ..., "model": ...}`` (several
    values joined with " / "), read from the records rather than from the sweep file's text."""
    def joined(values: set[str]) -> str:
        return " / ".join(sorted(v for v in values if v))

    recs = [r for rs in records.values() for r in rs]
    return {"dataset": joined({r.dataset for r in recs}) or "(dataset not recorded)",
            "model": joined({r.model for r in recs}) or "the model"}


def _fill(text: str, fields: Mapping[str, str]) -> str:
    # Plain replacement, not str.format: descriptions may hold other braces ("{1, 2, 3}").
    for key, value in fields.items():
        text = text.replace("{" + key + "}", value)
    return text


def _cost(n: int) -> str:
    return f"{n / 1e9:.3f} G" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _metric(records: Sequence[RunRecord], which: str, key: str) -> Summary:
    return summarize([getattr(r, which)[key] for r in records])


def sweep_table(sweep: Sweep, records: Mapping[str, Sequence[RunRecord]]) -> str:
    """The paper's table layout: one row per variant, error columns from our runs (mean ± std over
    seeds), cost columns computed exactly, and the paper's figures beside them for reference."""
    paper_cols = [k for k in ("top1", "top5", "gflops", "params") if any(k in c.paper for c in sweep.cells)]
    header = ["variant", "top-1 err (%)", "top-5 err (%)", "best top-1 err (%)", "params", "MACs",
              "MACs + SE ops", "train s/run", "img/s", *[f"paper {k}" for k in paper_cols]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in sweep.cells:
        recs = records.get(cell.label, [])
        if not recs:
            lines.append(f"| {cell.label} | not run |" + " |" * (len(header) - 2))
            continue
        r0 = recs[0]
        row = [
            cell.label,
            str(_metric(recs, "final", "top1_err")),
            str(_metric(recs, "final", "top5_err")),
            str(_metric(recs, "best", "top1_err")),
            f"{r0.params:,}",
            _cost(r0.macs),
            _cost(r0.paper_flops),
            f"{summarize([r.train_seconds for r in recs]).mean:.0f}",
            f"{summarize([r.images_per_s for r in recs]).mean:.0f}",
            *[str(cell.paper.get(k, "")) for k in paper_cols],
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def difference_statements(sweep: Sweep, records: Mapping[str, Sequence[RunRecord]], baseline: str) -> list[str]:
    """For each variant against ``baseline``: final and best top-1 error differences, said honestly."""
    base = records[baseline]
    out = []
    for cell in sweep.cells:
        if cell.label == baseline or not records.get(cell.label):
            continue
        recs = records[cell.label]
        for which, what in (("final", "final top-1 error"), ("best", "best top-1 error")):
            d = difference([getattr(r, which)["top1_err"] for r in recs], [getattr(r, which)["top1_err"] for r in base])
            out.append(d.statement(what, cell.label, baseline))
    return out


def plot_sweep_curves(records: Mapping[str, Sequence[RunRecord]], path: str | Path, title: str = "") -> Path:
    """Validation top-1 error and training loss per epoch, mean over seeds with a ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    shown = {label: recs for label, recs in records.items() if recs}
    for (label, recs), color in zip(shown.items(), distinct_colors(len(shown))):
        n = min(len(r.history) for r in recs)
        epochs = np.arange(1, n + 1)
        for ax, key in ((ax_err, "top1_err"), (ax_loss, "train_loss")):
            values = np.array([[h[key] for h in r.history[:n]] for r in recs])
            mean, std = values.mean(0), values.std(0, ddof=1) if len(recs) > 1 else np.zeros(n)
            ax.plot(epochs, mean, "o-", ms=3, color=color, label=f"{label} (n={len(recs)})")
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2)
    ax_err.set(xlabel="epoch", ylabel="validation top-1 error (%)", title="top-1 error (mean ± std over seeds)")
    ax_loss.set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="training loss")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_err, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_sweep_report(sweep: Sweep, records: Mapping[str, Sequence[RunRecord]], out: str | Path,
                       baseline: str | None = None) -> Path:
    """``report.md``, ``curves.png`` and ``results.json`` in ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    used = describe_runs(records)
    dataset = used["dataset"]
    curves = plot_sweep_curves(records, out / "curves.png", f"{sweep.name} ({dataset})")
    seeds = sorted({r.seed for recs in records.values() for r in recs})
    parts = [f"# {sweep.name}", ""]
    if sweep.description:
        parts += [_fill(sweep.description, used), ""]
    parts += [
        f"Data: {dataset}. Seeds: {', '.join(map(str, seeds))}. Errors are on the test split, in percent, "
        f"mean ± sample std over seeds; \"final\" is the last epoch, \"best\" the lowest over epochs. "
        f"Costs are exact counts for the trained networks (batch 1, their input size).",
        "",
    ]
    if sweep.table or sweep.paper_setting:
        parts += [f"Paper reference ({sweep.table}): {sweep.paper_setting}. The paper's figures are for that "
                  f"setting, not this data; they are shown for the structure of the comparison only.", ""]
    parts += [sweep_table(sweep, records), ""]
    if baseline and records.get(baseline):
        parts += ["## Differences against " + baseline, ""]
        parts += [f"- {s}" for s in difference_statements(sweep, records, baseline)] + [""]
    parts += [f"![curves]({curves.name})", ""]
    report = out / "report.md"
    atomic_write_bytes(report, "\n".join(parts).encode())
    atomic_write_bytes(out / "results.json", json.dumps(
        {"sweep": sweep.name, "records": {k: [dataclasses.asdict(r) for r in v] for k, v in records.items()}},
        indent=1).encode())
    return report
