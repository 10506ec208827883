"""One training epoch, and the one check that training has not diverged.

:func:`train_epoch` runs the steps with the pure schedule (``lr_at``), reading nothing from the
device but every ``cfg.sync_every`` steps; :func:`divergence` looks at what an epoch leaves
(its training loss, then the weights, BN statistics and validation loss about to be saved), so
that no non-finite checkpoint is ever written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn

from ..errors import SenetError
from .batches import BatchSteps
from .config import TrainConfig
from .distributed import all_reduce_sum, any_across_ranks, rank_info
from .loss import training_loss
from .metrics import TrainMeter, summarize
from .progress import Reporter
from .schedule import lr_at
from .setup import Setup

__all__ = ["NonFiniteLossError", "TrainedEpoch", "train_epoch", "divergence", "epoch_row"]


class NonFiniteLossError(SenetError, RuntimeError):
    """Training diverged: the loss, or the weights/BN statistics or validation loss checked before
    a checkpoint is written, became NaN or infinite. Nothing non-finite is saved: the newest
    finite checkpoint is kept. ``step`` is the first step whose training loss was non-finite, or
    the epoch's last step when the check before saving failed."""

    def __init__(self, epoch: int, step: int, loss: float, what: str = "loss") -> None:
        found = f"loss is {loss}" if what == "loss" else f"{what} became non-finite (validation loss {loss})"
        super().__init__(f"{found} at epoch {epoch}, step {step}; training stopped "
                         f"(the last good checkpoint is kept). Try a lower learning rate or grad_clip.")
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclasses.dataclass
class TrainedEpoch:
    """What :func:`train_epoch` measured, summed over the ranks."""

    epoch: int                        # 0-based
    metrics: dict[str, float]         # loss, acc, top1_err, top5_err (``summarize``)
    lr: float                         # the learning rate of the last step
    images: int                       # images trained on, all ranks
    started: float                    # time.perf_counter() at the first step
    seconds: float                    # training time (without evaluation)
    bad_step: tuple[int, float] | None = None  # (step, loss) of the first non-finite loss: the epoch stopped there


def train_epoch(t: Setup, cfg: TrainConfig, epoch: int, report: Reporter) -> TrainedEpoch:
    """Train ``t.net`` for one epoch; stop at the sync that finds a non-finite loss. Ends with the
    same BN statistics on every rank (those of rank 0), ready to evaluate and save."""
    t.train_loader.set_epoch(epoch)
    t.net.train()
    meter, steps = TrainMeter(t.device), t.steps
    lrs = [lr_at(epoch + step / steps, cfg) for step in range(steps)]  # the pure schedule, once an epoch
    mark_step = cfg.compile and cfg.compile_mode == "reduce-overhead"  # CUDA graphs: one replay per step
    batches = BatchSteps.for_epoch(cfg, epoch, rank_info().rank, t.card.mean, t.card.std, t.info["classes"],
                                   t.device)
    bad, started = None, time.perf_counter()
    for step, (x, y) in enumerate(t.train_loader):
        _set_lr(t.optimizer, lrs[step])
        x, targets = batches.apply(x, y)  # the modern recipe's steps; the batch as loaded when all are off
        if mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(t.device, t.amp_dtype):
            logits = t.net(x)
        loss = training_loss(logits, y, targets, loss=cfg.loss, label_smoothing=cfg.label_smoothing,
                             bce_target_thresh=cfg.bce_target_thresh)
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            t.scaler.unscale_(t.optimizer)
            nn.utils.clip_grad_norm_(t.model.parameters(), cfg.grad_clip)
        t.scaler.step(t.optimizer)
        t.scaler.update()
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        meter.update(step, logits, y, loss)  # on the device, with the first non-finite step
        if (step + 1) % cfg.sync_every == 0 or step + 1 == steps:
            bad = meter.first_bad_step()  # the same on every rank
            if bad is not None:
                break
        report.step(epoch, step, steps, meter.summary)
    seconds = time.perf_counter() - started
    metrics = summarize(all_reduce_sum(meter.counts))
    _broadcast_buffers(t.model)
    return TrainedEpoch(epoch, metrics, lrs[-1], int(meter.counts[3].item()), started, seconds, bad)


def divergence(t: Setup, trained: TrainedEpoch, val: Mapping[str, float] | None) -> NonFiniteLossError | None:
    """Whether the epoch diverged: a non-finite training loss (``trained.bad_step``; then there is
    no validation, ``val`` is None), or non-finite weights, BN statistics or validation loss (a
    step can blow the weights up after a finite loss: they must never be saved). The same answer
    on every rank."""
    epoch = trained.epoch + 1
    if trained.bad_step is not None:
        return NonFiniteLossError(epoch, trained.bad_step[0] + 1, trained.bad_step[1])
    assert val is not None
    if any_across_ranks(not (math.isfinite(val["loss"]) and _all_finite(t.model)), t.device):
        return NonFiniteLossError(epoch, t.steps, val["loss"], what="the weights, BN statistics or validation loss")
    return None


def epoch_row(trained: TrainedEpoch, val: Mapping[str, float],
              ema: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The epoch's row of the metrics table (``rundir.METRIC_COLUMNS``); ``time_s`` counts the
    evaluation too. With an EMA of the weights, its validation loss and errors follow as
    ``ema_val_loss``, ``ema_top1_err``, ``ema_top5_err`` (in metrics.jsonl)."""
    train = trained.metrics
    extra = {} if ema is None else {"ema_val_loss": ema["loss"], "ema_top1_err": ema["top1_err"],
                                    "ema_top5_err": ema["top5_err"]}
    return {"epoch": trained.epoch + 1, "lr": trained.lr, "train_loss": train["loss"], "train_acc": train["acc"],
            "train_err": train["top1_err"], "val_loss": val["loss"], "top1_err": val["top1_err"],
            "top5_err": val["top5_err"], "time_s": time.perf_counter() - trained.started,
            "images_per_s": trained.images / max(trained.seconds, 1e-9), **extra}


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    # A plain float: the optimisers pass it to their kernels as a scalar (no device tensor, no sync).
    # The schedule scales each group by its ``lr_scale`` (layer-wise decay, timm's convention).
    for group in optimizer.param_groups:
        group_lr = lr * group["lr_scale"] if "lr_scale" in group else lr
        if group["lr"] != group_lr:
            group["lr"] = group_lr


@torch.no_grad()
def _all_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer (BN statistics) is finite: one host sync."""
    flags = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _broadcast_buffers(model: nn.Module) -> None:
    # Without SyncBN each rank's last forward moved its own BN statistics; use rank 0's everywhere
    # so evaluation and the saved checkpoint agree on every rank.
    if rank_info().world_size > 1:
        for buf in model.buffers():
            dist.broadcast(buf, 0)
