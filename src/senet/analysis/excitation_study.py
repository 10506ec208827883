"""The excitation study of §7.2 on a trained network: statistics, figures, and the last-stage test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..atomic import atomic_write_bytes, check_writable
from .evaluate import evaluate
from .excitations import ExcitationStats, gate_removal_study, record_excitations
from .figures import pick_blocks, plot_block_summary, plot_class_excitations

__all__ = ["excitation_study"]


def _fmt_eval(m: dict[str, float], top5: bool) -> str:
    # Top-5 error means something only with more than 5 classes (it is 0 otherwise).
    return f"{m['top1_err']:.2f} | {format(m['top5_err'], '.2f') if top5 else '-'} | {m['loss']:.4f}"


def excitation_study(
    model: nn.Module,
    loader: Any,
    classes: Sequence[str],
    out: str | Path,
    *,
    title: str = "",
    show_classes: Sequence[int] | None = None,
    tol: float = 0.05,
) -> tuple[ExcitationStats, dict[str, object]]:
    """Record per-class excitations over ``loader``, draw Fig. 6/7-style figures, and test §7.2's
    claim on the last stage: fix its gates at 1 (and at their means) and report the accuracy change
    against the parameters removing them would save. Writes ``excitations.json``, ``report.md``,
    ``class_excitations.png`` and ``blocks.png`` into ``out``."""

    out = Path(out)
    stats = record_excitations(model, loader, len(classes), classes=classes, tol=tol)
    last_stage = stats.stage_of(stats.blocks[-1])
    last_blocks = [b for b in stats.blocks if stats.stage_of(b) == last_stage]
    study = gate_removal_study(model, stats, last_blocks, lambda m: evaluate(m, loader))
    check_writable(out / "report.md", create_folder=True)  # only now: a failed study leaves no folder
    top5 = len(classes) > 5
    fig6 = plot_class_excitations(stats, out / "class_excitations.png", classes=show_classes)
    summary = plot_block_summary(stats, out / "blocks.png")
    atomic_write_bytes(out / "excitations.json", json.dumps({"stats": stats.as_dict(), "last_stage_study": study},
                                                            indent=1).encode())

    rows = "\n".join(f"| {b} | {stats.specificity[b]:.3f} | {100 * stats.near_identity[b]:.1f} |" for b in stats.blocks)
    picked = ", ".join(pick_blocks(stats.blocks))
    text = f"""# Excitation analysis{': ' + title if title else ''}

Per-class mean excitation of every SE block over {int(stats.counts.sum()):,} images (paper §7.2).
**Class specificity** is the share of a gate's variance over images that lies between classes
(eta squared, averaged over channels: 0 = the same for every class, 1 = set by the class alone).
**Near identity** is the share of gate values within {tol:g} of 1.

![class excitations]({fig6.name})

Blocks shown: {picked}. Curves: mean excitation per channel for some classes and for all images.

![per block]({summary.name})

| SE block | class specificity | near identity (%) |
|---|---|---|
{rows}

## Removing the last stage's SE blocks ({last_stage}: {len(last_blocks)} blocks)

§7.2 finds the last stage's excitations saturate and removing them costs little. Here their gates
are fixed at 1 (the block does nothing) or at their dataset-mean value per channel:

| gates of {last_stage} | top-1 err (%) | top-5 err (%) | loss |
|---|---|---|---|
| learned | {_fmt_eval(study['learned'], top5)} |
| fixed at 1 | {_fmt_eval(study['fixed_one'], top5)} |
| fixed at dataset mean | {_fmt_eval(study['fixed_mean'], top5)} |

Removing them would save {study['params_saved']:,} parameters
({100 * study['params_saved_share']:.2f}% of the network).
"""
    atomic_write_bytes(out / "report.md", text.encode())
    return stats, study
