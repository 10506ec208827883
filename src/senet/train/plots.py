"""Curve plots of a run: loss and top-1/top-5 error per epoch (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..weights.checkpoint import atomic_write_bytes

__all__ = ["plot_curves"]


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Save a two-panel PNG: train/val loss, and train/top-1/top-5 error (%) against epoch."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display needed; safe in worker processes
    from matplotlib.figure import Figure

    epochs = [m["epoch"] for m in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, err_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [m["train_loss"] for m in history], "o-", label="train")
    loss_ax.plot(epochs, [m["val_loss"] for m in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    err_ax.plot(epochs, [m["train_err"] for m in history], "o-", label="train top-1")
    err_ax.plot(epochs, [m["top1_err"] for m in history], "o-", label="validation top-1")
    err_ax.plot(epochs, [m["top5_err"] for m in history], "o-", label="validation top-5")
    err_ax.set(xlabel="epoch", ylabel="error (%)", title="error")
    for ax in (loss_ax, err_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())  # a kill mid-save must not leave half a PNG
    return path
