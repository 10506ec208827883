"""Figures of excitation statistics (paper Fig. 6-7), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write_bytes
from .excitations import ExcitationStats

__all__ = ["pick_blocks", "plot_class_excitations", "plot_block_summary"]


def _pyplot():
    # Imported here: matplotlib is only needed when drawing, and Agg needs no display.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    # Drawn into memory, then written by senet.atomic: a failed or interrupted save leaves no half PNG.
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def pick_blocks(blocks: Sequence[str], n: int = 4) -> list[str]:
    """Early, middle, late and the last block (§7.2 looks at each depth and at the final stage)."""
    if len(blocks) <= n:
        return list(blocks)
    idx = np.unique(np.linspace(0, len(blocks) - 1, n).round().astype(int))
    return [blocks[i] for i in idx]


def plot_class_excitations(
    stats: ExcitationStats,
    path: str | Path,
    blocks: Sequence[str] | None = None,
    classes: Sequence[int] | None = None,
    max_channels: int = 256,
) -> Path:
    """Paper Fig. 6: mean excitation per channel for several classes and for all classes, one panel per block."""
    plt = _pyplot()
    blocks = list(blocks) if blocks else pick_blocks(stats.blocks)
    classes = list(classes) if classes is not None else list(range(min(4, len(stats.classes))))
    fig, axes = plt.subplots(len(blocks), 1, figsize=(9, 2.4 * len(blocks)), squeeze=False)
    for ax, block in zip(axes[:, 0], blocks):
        means = stats.class_means[block][:, :max_channels]
        channels = np.arange(means.shape[1])
        for k in classes:
            ax.plot(channels, means[k], lw=0.9, alpha=0.85, label=stats.classes[k])
        ax.plot(channels, stats.overall_mean[block][:max_channels], color="black", lw=1.6, label="all classes")
        ax.set_title(f"{block}  (specificity {stats.specificity[block]:.3f}, "
                     f"near identity {100 * stats.near_identity[block]:.0f}%)", fontsize=9)
        ax.set_ylabel("mean excitation")
        ax.set_ylim(min(0.0, float(means.min()) - 0.02), max(1.0, float(means.max()) + 0.02))
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("channel index")
    axes[0, 0].legend(fontsize=8, ncol=min(5, len(classes) + 1), loc="lower right")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_block_summary(stats: ExcitationStats, path: str | Path) -> Path:
    """Class specificity and near-identity share of every SE block, in depth order."""
    plt = _pyplot()
    x = np.arange(len(stats.blocks))
    fig, (a, b) = plt.subplots(2, 1, figsize=(max(7, 0.28 * len(x)), 5.5), sharex=True)
    bars = a.bar(x, [stats.specificity[n] for n in stats.blocks], color="tab:blue")
    a.bar_label(bars, fmt="%.2f", fontsize=6)
    a.set_ylabel("class specificity\n(between-class share\nof variance)")
    a.grid(axis="y", alpha=0.3)
    bars = b.bar(x, [100 * stats.near_identity[n] for n in stats.blocks], color="tab:orange")
    b.bar_label(bars, fmt="%.0f%%", fontsize=6)  # a 0% bar is invisible without its label
    b.set_ylabel(f"gates within {stats.tol:g}\nof 1 (%)")
    b.set_ylim(0, 100)
    b.grid(axis="y", alpha=0.3)
    b.set_xticks(x, stats.blocks, rotation=90, fontsize=7)
    b.set_xlabel("SE block (input to output)")
    fig.tight_layout()
    return _save(plt, fig, path)
