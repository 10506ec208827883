"""``fit``: train one network from a :class:`TrainConfig`, readable top to bottom (docs/training.md).

config -> :func:`~senet.train.setup.setup` (data, model, optimiser, the resumed state) -> for each
epoch: :func:`~senet.train.epoch.train_epoch` with ``lr_at``, ``evaluate``, the divergence check,
then the run directory (:class:`~senet.train.run.RunDirectory`) logs and checkpoints. Device and
precision are arguments/config, never hard-coded; all printing goes through a
:class:`~senet.train.progress.Reporter`; only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..device import resolve_device
from ..models.card import ModelCard
from .config import TrainConfig, check_config
from .epoch import NonFiniteLossError, divergence, epoch_row, train_epoch
from .metrics import evaluate
from .progress import Reporter
from .run import RunDirectory, resume_config
from .rundir import final_summary
from .setup import COMPILE_MODES, PRECISIONS, build_model, load_data, resolve_precision, setup
from .threads import applies_threads

__all__ = ["fit", "RunResult", "NonFiniteLossError", "resolve_precision", "build_model", "load_data",
           "resume_config", "PRECISIONS", "COMPILE_MODES"]


@dataclasses.dataclass
class RunResult:
    """What :func:`fit` returns: metric rows per epoch (``rundir.METRIC_COLUMNS``), the last and
    the best (lowest top-1 error) rows, the trained model (unwrapped, in eval mode) and its card."""

    history: list[dict[str, Any]]
    final: dict[str, Any]
    best: dict[str, Any]
    model: nn.Module
    card: ModelCard
    run_dir: Path | None


@applies_threads  # cfg.threads, restored on return
def fit(cfg: TrainConfig, run_dir: str | Path | None = None, *, device: str | torch.device | None = None,
        resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
        reporter: Reporter | None = None) -> RunResult:
    """Train ``cfg`` on ``device`` (default: CUDA if available); log and checkpoint into ``run_dir``.

    ``resume=True`` continues from ``run_dir/checkpoints/last*`` exactly (weights, optimiser,
    epoch, RNG states, history): 2 epochs + resume + 2 equals 4 straight; it first repairs every
    file of the run directory from that state (``senet.train.reconcile``), falling back to the
    ``best`` state when ``last`` is damaged. ``stop_after=k`` stops after epoch k as if
    interrupted (the run can be resumed). The run directory is locked for the whole run
    (:class:`~senet.train.runlock.RunLock`); a new run into a directory holding another run is
    refused unless ``overwrite=True``. Under ``torch.distributed`` the model is wrapped in
    DistributedDataParallel, each rank trains on its shard and metrics are summed over ranks.

    Raises :class:`NonFiniteLossError` when training diverges (a NaN/inf loss, read from the
    device every ``cfg.sync_every`` steps, or non-finite weights, BN statistics or validation
    loss, checked before each checkpoint): no non-finite checkpoint is ever written. Raises
    :class:`RunDirError` when the run directory is in use, not empty, or cannot be written (disk
    full, permissions). Files are written by a background thread from CPU snapshots, all of them
    before ``fit`` returns or raises.

    Progress (a live bar on a terminal, a line per epoch otherwise, the final table) is printed
    by a :class:`TerminalReporter` unless ``reporter`` is given: ``reporter=Reporter()`` is silent.
    ``cfg.threads`` sets torch's CPU thread count for the run (restored afterwards);
    ``cfg.tensorboard`` also logs each epoch's metrics to ``run_dir/tensorboard`` (rank 0).
    """
    check_config(cfg)  # bad input fails before any work, the run directory included
    device = resolve_device(device)
    with RunDirectory.open(cfg, run_dir, reporter, resume=resume, overwrite=overwrite) as run:
        t = setup(cfg, device, run)  # data, model, optimiser, loaders; a resumed run's state
        run.start(device, t.info, t.resumed)  # config.yaml, env.json; the progress header
        end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        for epoch in range(t.start, end):
            trained = train_epoch(t, cfg, epoch, run.report)  # stops at the first non-finite loss
            val = None if trained.bad_step is not None else evaluate(
                t.model, t.test_loader, autocast_dtype=t.amp_dtype, channels_last=cfg.channels_last)
            error = divergence(t, trained, val)
            if error is not None:
                run.stop(error, t.history)  # the finite checkpoints stay; report.md says why; raises
            ema_val = None if t.ema is None else evaluate(  # the averaged weights, beside the raw ones
                t.ema.module, t.test_loader, autocast_dtype=t.amp_dtype, channels_last=cfg.channels_last)
            t.history.append(epoch_row(trained, val, ema_val))
            run.report.epoch_end(t.history[-1])
            run.save_epoch(t.history, t.model, t.optimizer, t.scaler, t.card, final=epoch + 1 == end,
                           extra_state=None if t.ema is None else {"ema": t.ema.state_dict()},
                           ema=None if t.ema is None else t.ema.module)
        final, best, summary = final_summary(t.history, t.info["classes"], t.info["test_dataset"])
        run.finish(t.history, summary)  # report.md; waits for every file
    return RunResult(t.history, final, best, t.model.eval(), t.card, Path(run_dir) if run_dir is not None else None)
