"""Evaluating a network as in the paper's tables: loss, top-1 and top-5 error (in percent), and
the dataset a checkpoint is evaluated on, prepared with the checkpoint's own evaluation view.

Counts are accumulated as sums (loss x n, correct, n), so results from several batches or
several ranks combine exactly by adding, then :func:`summarize` divides once. Serving code
(``senet eval``, the analysis tools) uses this module; training imports it from here.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from ..data import load_dataset
from ..errors import UserInputError
from ..models.card import ModelCard

__all__ = ["batch_counts", "summarize", "evaluate", "card_dataset"]


def _sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    # Under torch.distributed every rank passed its shard: sum the counts (in place).
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


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
    return summarize(_sum_over_ranks(counts))


def card_dataset(card: ModelCard, spec: str | None = None, split: str = "test", root: str | None = None) -> Any:
    """The dataset to evaluate or analyse a trained network on: ``spec`` (default: the one its
    card says it was trained on), its evaluation items prepared by the card's evaluation view
    alone (:meth:`ModelCard.eval_transform`: size, crop, interpolation, mean/std; the one
    ``senet predict`` applies), whatever the dataset's own default view."""

    spec = spec or card.dataset
    if spec is None:
        raise UserInputError(f"the card of {card.name} names no training dataset; give one (--data)")
    root = root if root is not None else card.data_root
    data = load_dataset(spec, split, root=root, image_size=card.input_size[1])
    if card.classes is not None and len(data.classes) != len(card.classes):
        raise UserInputError(f"{data.name} has {len(data.classes)} classes but {card.name} was trained on "
                         f"{len(card.classes)}")
    return data.with_view(card.eval_transform())
