"""Training metrics: the epoch meter with its non-finite-loss guard; loss, top-1 and top-5 error
(:mod:`senet.analysis.evaluate`, re-exported here).

Counts are accumulated as sums (loss x n, correct, n), so results from several batches or
several ranks combine exactly by adding, then :func:`summarize` divides once.
"""

from __future__ import annotations

import torch

from ..analysis.evaluate import batch_counts, evaluate, summarize
from .distributed import min_across_ranks

__all__ = ["batch_counts", "summarize", "evaluate", "TrainMeter"]


class TrainMeter:
    """One training epoch's sums and its non-finite-loss guard, kept on the device.

    :meth:`update` only queues device work (no ``.item()``), so the training step never waits
    for the GPU. The first step whose loss is NaN/inf is recorded on the device too; reading it
    (:meth:`first_bad_step`) or the running means (:meth:`summary`) is the one host sync, made
    every ``sync_every`` steps and at the end of the epoch.
    """

    NONE = 2**62  # "no bad step yet": larger than any step index, so a min over ranks keeps real ones

    def __init__(self, device: torch.device) -> None:
        self.counts = torch.zeros(4, dtype=torch.float64, device=device)
        self.bad_step = torch.full((), self.NONE, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=device)

    def update(self, step: int, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        """Add one batch (``loss`` is its mean) and remember ``step`` if its loss is the first non-finite one."""
        loss = loss.detach()
        self.counts += batch_counts(logits.detach().float(), targets, loss * targets.numel())
        first = torch.isfinite(loss).logical_not() & (self.bad_step == self.NONE)
        self.bad_step = torch.where(first, step, self.bad_step)
        self.bad_loss = torch.where(first, loss.float(), self.bad_loss)

    def first_bad_step(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss on any rank, or None (a host sync)."""
        step = min_across_ranks(self.bad_step.clone())
        if int(step) == self.NONE:
            return None
        local = int(self.bad_step) == int(step)
        return int(step), float(self.bad_loss) if local else float("nan")

    def summary(self) -> dict[str, float]:
        """Running means of this rank's epoch so far (:func:`summarize`; a host sync)."""
        return summarize(self.counts)
