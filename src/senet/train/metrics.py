"""Classification metrics as in the paper's tables: loss, top-1 and top-5 error (in percent).

Counts are accumulated as sums (loss x n, correct, n), so results from several batches or
several ranks combine exactly by adding, then :func:`summarize` divides once.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from .distributed import all_reduce_sum, min_across_ranks

__all__ = ["batch_counts", "summarize", "evaluate", "TrainMeter"]


def batch_counts(logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor) -> torch.Tensor:
    """``[loss_sum, top1_correct, top5_correct, n]`` for one batch, as a float64 tensor on the device.

    Top-5 uses ``min(5, classes)`` so that it stays defined on datasets with fewer classes.
    """
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == targets[:, None]
    return torch.stack([
        loss_sum.detach().double(),
        hit[:, 0].sum().double(),
        hit.any(dim=1).sum().double(),
        # torch.full, not torch.tensor: a host->device copy from pageable memory waits for the GPU.
        torch.full((), float(targets.numel()), dtype=torch.float64, device=logits.device),
    ])


def summarize(counts: torch.Tensor) -> dict[str, float]:
    """``loss``, ``acc``, ``top1_err`` and ``top5_err`` (percent) from summed :func:`batch_counts`."""
    loss, c1, c5, n = counts.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "acc": 100.0 * c1 / n, "top1_err": 100.0 * (1 - c1 / n), "top5_err": 100.0 * (1 - c5 / n)}


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


def _unpadded_share(loader: object) -> int | None:
    """How many of this rank's samples are real when a sharded loader padded the dataset
    (``senet.data`` repeats samples at the end of the global order so ranks get equal shares)."""
    if not getattr(loader, "padding", 0):
        return None
    n, world, rank = loader.dataset_size, loader.world_size, loader.rank  # type: ignore[attr-defined]
    return len(range(rank, n, world))


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             autocast_dtype: torch.dtype | None = None, channels_last: bool = False) -> dict[str, float]:
    """Loss (plain cross-entropy, no smoothing), top-1 and top-5 error in percent over ``loader``.

    Under ``torch.distributed`` each rank passes its shard and the counts are summed across ranks,
    so every rank returns the metrics of the whole set. The model is left in eval mode.
    """
    model.eval()
    counts = None
    device_type = "cpu"
    left = _unpadded_share(loader)
    for x, y in loader:
        device_type = x.device.type
        if left is not None:  # drop the repeated samples that pad the last ranks' shards
            x, y = x[:left], y[:left]
            left -= len(y)
            if len(y) == 0:
                continue
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(x)
        loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
        c = batch_counts(logits.float(), y, loss_sum)
        counts = c if counts is None else counts + c
    if counts is None:
        counts = torch.zeros(4, dtype=torch.float64, device="cuda" if device_type == "cuda" else "cpu")
    return summarize(all_reduce_sum(counts))
