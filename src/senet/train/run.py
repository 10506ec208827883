"""The run directory as the training loop sees it: every file a run writes goes through one
:class:`RunDirectory`, which does nothing on ranks other than 0 or without a directory.

It holds the directory's lock for the whole run (:class:`~senet.train.runlock.RunLock`), refuses
or reuses what the directory already holds (``prepare_run_dir``), repairs it from the state a
resumed run starts from (:mod:`senet.train.reconcile`), and writes ``config.yaml``, ``env.json``,
each epoch's checkpoints, metrics and plot (from CPU snapshots, on a background thread:
:mod:`senet.train.writer`) and ``report.md``. The layout is described in :mod:`senet.train.rundir`
and docs/training.md.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, NoReturn

import torch
import yaml
from torch import nn

from ..errors import MissingPathError, NotAFileError, UserInputError, WriteError
from ..models.card import ModelCard
from ..weights.checkpoint import CheckpointMeta, checkpoint_paths, save_checkpoint, write_checkpoint_files
from .coerce import ConfigError
from .config import TrainConfig, check_resume_changes, config_from_dict, config_to_dict
from .distributed import rank_info
from .plots import plot_curves
from .progress import Reporter, TerminalReporter
from .recipes import dump_config
from .reconcile import has_checkpoint, load_resume_state, reconcile_run_dir
from .rng import capture_rng
from .rundir import environment, write_config, write_metrics, write_report, write_run_files
from .runlock import (RUN_FILES, RunDirError, RunLock, describe_os_error, prepare_run_dir, remove_stale_temp_files,
                      results_in)
from .tensorboard import with_tensorboard
from .writer import BackgroundWriter, WeightsSnapshot, cpu_snapshot

__all__ = ["RunDirectory", "resume_config", "refuse_unused_changes", "PLOT_EVERY_S", "UNUSED_ON_RESUME"]

PLOT_EVERY_S = 5.0  # curves.png is redrawn at most this often (and after the last epoch): matplotlib is slow

# Settings read only when a run starts: a resume restores the weights from its checkpoint instead,
# so a change to them would be recorded but never used.
UNUSED_ON_RESUME = ("model.weights", "model.weights_source")


def refuse_unused_changes(changes: Mapping[str, tuple[Any, Any]]) -> None:
    """Refuse a resume's change to a setting only a new run reads (:data:`UNUSED_ON_RESUME`): it
    would be recorded, and never used."""
    unused = [k for k in changes if any(k == f or k.startswith(f + ".") for f in UNUSED_ON_RESUME)]
    if unused:
        was, now = changes[unused[0]]
        raise ConfigError(f"config key {unused[0]!r} would not be used on resume (the weights come from the "
                          f"run's checkpoint): the run has {was!r}, got {now!r}; start a new run (--out) "
                          f"to change it")


class RunDirectory:
    """One run's directory, for the training loop (open it with :meth:`open`).

    ``path`` is None on ranks other than 0 and for a run without a directory: then every method
    only reports (through the silent :class:`Reporter` on other ranks) and writes nothing.
    """

    def __init__(self, cfg: TrainConfig, path: Path | None, report: Reporter, *, resume_from: Path | None = None,
                 writer: BackgroundWriter | None = None) -> None:
        self.cfg = cfg
        self.path = path                # where this process writes; None: it writes nothing
        self.report = report            # progress and notices (silent on other ranks)
        self.resume_from = resume_from  # the run directory whose checkpoint the run continues, on every rank
        self._writer = writer
        self._title = ""
        self._last_plot = -math.inf
        self._changes: dict[str, tuple[Any, Any]] = {}  # what a resume changes in the run's config
        self._config_pending: str | None = None  # config.yaml waiting for a checkpoint made with it

    @classmethod
    @contextlib.contextmanager
    def open(cls, cfg: TrainConfig, run_dir: str | Path | None, reporter: Reporter | None = None, *,
             resume: bool = False, overwrite: bool = False) -> Iterator["RunDirectory"]:
        """Lock ``run_dir`` and make it ready for a new run, or for resuming (``resume=True``; a run
        stopped before its first checkpoint starts over); yield it, then finish its writes.

        An OS error writing into the directory becomes a one-line :class:`RunDirError`: every file
        is replaced atomically, so what was written before is intact and the run resumes.
        """
        reporter = TerminalReporter() if reporter is None else reporter
        if resume and run_dir is None:
            raise UserInputError("resume=True needs the run directory to resume from")
        main = rank_info().is_main
        if run_dir is None or not main:  # nothing to write here: report only (rank 0), resume from run_dir
            yield cls(cfg, None, reporter if main else Reporter(), resume_from=Path(run_dir) if resume else None)
            return
        path = Path(run_dir)
        if resume and not path.is_dir():
            raise MissingPathError(f"no checkpoint to resume from: {path} is not a directory")
        if resume:
            _check_run_files_are_files(path)
        lock = RunLock(path)
        with lock:
            try:
                if resume and not has_checkpoint(path):  # stopped before its first checkpoint: nothing to continue
                    _start_over(path, reporter)
                    resume = False
                prepare_run_dir(path, resume=resume, overwrite=overwrite)
                report = with_tensorboard(reporter, path) if cfg.tensorboard else reporter
                with BackgroundWriter() as writer:  # the run's files, written off the training thread
                    yield cls(cfg, path, report, resume_from=path if resume else None, writer=writer)
            except WriteError as e:  # a full disk: say that the run can go on from what was written
                lock.remove_if_unused()
                if not has_checkpoint(path):
                    raise
                raise WriteError(f"{e}; the files written before are intact, resume with: "
                                 f"senet train --resume {path}") from e
            except OSError as e:
                lock.remove_if_unused()
                if e.filename is None or path.resolve() not in Path(e.filename).resolve().parents:
                    raise
                raise RunDirError(f"cannot write {describe_os_error(e)}; the files written before are intact, "
                                  f"resume with: senet train --resume {path}") from None
            except BaseException:  # a command that failed before training leaves no folder of its own
                lock.remove_if_unused()
                raise

    def resume_state(self, dataset: str) -> dict[str, Any]:
        """The checkpoint state the run continues from (``last``, else ``best``), checked against
        the config; on rank 0 every file of the directory is first made to agree with it."""
        if self.resume_from is None:
            raise UserInputError("this run starts from scratch: it has no checkpoint state to resume from")
        state, tag, notes = load_resume_state(self.resume_from)
        changes = check_resume_changes(config_from_dict(state["config"]), self.cfg)  # before any file is touched
        refuse_unused_changes(changes)
        if state["epoch"] > self.cfg.epochs:  # refused before any file is repaired or rewritten
            raise UserInputError(f"{self.resume_from} has already trained {state['epoch']} epochs; "
                                 f"epochs={self.cfg.epochs} would shorten it. Resume with epochs >= {state['epoch']} "
                                 f"(more epochs extend the run)")
        self._changes = changes
        for note in notes:
            self.report.message(note)
        if changes:  # every accepted change is said, and recorded in env.json (resume_changed)
            self.report.message("resuming with changed settings: " + "; ".join(
                f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items()))
        if self.path is not None:  # before training on: a kill may have left files of different epochs
            for note in reconcile_run_dir(self.path, state, tag, self._title_for(dataset)):
                self.report.message(note)
        return state

    def start(self, device: torch.device, info: Mapping[str, Any], resumed: Mapping[str, Any]) -> None:
        """Write ``config.yaml`` and ``env.json`` (versions, hardware, what ``setup`` built:
        ``info``; ``resumed``: the resume's record), then show the progress header."""
        self._title = self._title_for(info["dataset"])
        if resumed:  # the config's changes by their keys, and what else the optimiser reported changed
            recorded = {k: list(v) for k, v in self._changes.items()}
            recorded.update({k: v for k, v in resumed.get("resume_changed", {}).items() if f"optim.{k}" not in recorded})
            resumed = {**resumed, "resume_changed": recorded}
        if self.path is not None:
            # A resumed run's config.yaml is replaced only once a checkpoint made with the new
            # settings exists (save_epoch): a resume that diverges or has nothing to train keeps
            # the record of the configuration its checkpoints were made with.
            deferred = bool(resumed) and bool(self._changes)
            config = None if deferred else dump_config(self.cfg)
            self._config_pending = dump_config(self.cfg) if deferred else None
            write_run_files(self.path, config, environment(device, {
                "world_size": info["world_size"], "precision": info["precision"], "dataset": info["dataset"],
                "model_params": info["params"], **resumed}))
        self.report.start({**info, "run_dir": self.path})
        done = resumed.get("resumed_after_epoch") if resumed else None
        if done is not None and done >= self.cfg.epochs:
            self.report.message(f"nothing to train: {self.resume_from} has trained all {self.cfg.epochs} epochs "
                                f"(resume with --epochs N, N > {done}, to extend it)")

    def save_epoch(self, history: list[dict[str, Any]], model: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, card: ModelCard, *, final: bool,
                   extra_state: Mapping[str, Any] | None = None, ema: nn.Module | None = None) -> None:
        """Queue the files of the epoch just appended to ``history``: its metrics, the plot (at most
        every ``PLOT_EVERY_S`` seconds, and after the ``final`` epoch), and ``last`` every
        ``cfg.save_every`` epochs and at the end, ``best`` when it ties or beats every earlier epoch.
        With an ``ema`` (the averaged network), its weights go to ``checkpoints/ema.safetensors``
        with each ``last``, so that ``senet eval``/``predict``/``export`` take them like any
        checkpoint. The weights and trainer state (with ``extra_state``, e.g. the EMA's own state
        for resuming) are copied to the CPU now; the files follow in the background."""
        if self.path is None:
            return
        done = history[-1]["epoch"]
        best = history[-1]["top1_err"] <= min(r["top1_err"] for r in history)
        last = done % self.cfg.save_every == 0 or final or best
        plot = final or time.monotonic() - self._last_plot >= PLOT_EVERY_S
        self._last_plot = time.monotonic() if plot else self._last_plot
        weights, ema_weights, state = None, None, {"epoch": done, "history": list(history)}
        if last and ema is not None:
            ema_weights = WeightsSnapshot(ema)
        if last or best:  # copies, since training goes on while the writer saves them
            weights = WeightsSnapshot(model)
            state.update(optimizer=cpu_snapshot(optimizer.state_dict()), scaler=scaler.state_dict(),
                         rng=capture_rng(), config=config_to_dict(self.cfg), **cpu_snapshot(dict(extra_state or {})))
        config, self._config_pending = (self._config_pending, None) if last or best else (None, self._config_pending)
        self._writer.submit(functools.partial(_write_epoch, self.path, self._title, weights, card, state,
                                              last=last, best=best, plot=plot, config_yaml=config,
                                              ema_weights=ema_weights))

    def stop(self, error: Exception, history: list[dict[str, Any]]) -> NoReturn:
        """End a diverged run: finish the pending (finite) checkpoint writes, say why in
        ``report.md``, raise ``error``."""
        if self._writer is not None:
            self._writer.flush()
        if self.path is not None:
            write_report(self.path, self._title, history, f"**Stopped**: {error}")
        raise error

    def finish(self, history: list[dict[str, Any]], summary: str) -> None:
        """Write ``report.md`` (the table and ``summary``), wait for every file, show the table."""
        if self.path is not None and history:
            self._writer.submit(functools.partial(write_report, self.path, self._title, list(history), summary))
        if self._writer is not None:
            self._writer.flush()
        self.report.end(history, summary)

    def _title_for(self, dataset: str) -> str:
        return f"{self.cfg.model.name} on {dataset}"


def _check_run_files_are_files(path: Path) -> None:
    """Refuse, before anything, a run whose file (``config.yaml``...) became a directory: it could
    be neither read nor replaced, whatever the resume did."""
    for name in RUN_FILES:
        p = path / name
        if p.is_dir():
            raise NotAFileError(f"{p} is a directory where the run keeps its {name}; move it away "
                                f"(mv {p} {p}.moved) and resume again")


def _start_over(path: Path, reporter: Reporter) -> None:
    """Check that a run stopped before its first checkpoint can start over (its directory holds
    nothing else), and say so."""
    remove_stale_temp_files(path)
    held = results_in(path)
    if held:
        raise RunDirError(f"no checkpoint to resume from in {path}, which holds other files "
                          f"({', '.join(held[:4])}); replace it with senet train --out "
                          f"{path} --overwrite, or choose another --out")
    reporter.message(f"{path} has no checkpoint yet (stopped before its first epoch ended): starting the run over")


def _write_epoch(run_dir: Path, title: str, weights: WeightsSnapshot | None, card: ModelCard,
                 state: dict[str, Any], *, last: bool, best: bool, plot: bool, config_yaml: str | None = None,
                 ema_weights: WeightsSnapshot | None = None) -> None:
    """One epoch's files (in the writer thread), in the order that keeps the run resumable;
    ``config_yaml`` (a resume's changed settings) once a checkpoint made with them exists. The
    EMA's weights file follows ``last``, whose state holds the EMA for resuming: a kill between
    the two leaves an older ``ema.safetensors`` that says its own epoch."""
    done, history = state["epoch"], state["history"]
    if last:
        save_checkpoint(run_dir, "last", weights, CheckpointMeta(card.to_dict(), done), state)
        if ema_weights is not None:
            write_checkpoint_files(run_dir, "ema", ema_weights.state_dict(),
                                   CheckpointMeta(card.to_dict(), done, history[-1].get("ema_top1_err")), None)
    if best:
        save_checkpoint(run_dir, "best", weights, CheckpointMeta(card.to_dict(), done, history[-1]["top1_err"]), state)
    if config_yaml is not None:
        write_config(run_dir, config_yaml)
    write_metrics(run_dir, history)
    if plot:
        plot_curves(history, run_dir / "curves.png", title)


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with, read from its ``last`` checkpoint (``best`` if that is
    damaged); for a run stopped before its first checkpoint, from its ``config.yaml`` (``fit``
    with ``resume=True`` then starts it over). Raises :class:`RunDirError` while another process
    holds the run."""
    run_dir = Path(run_dir)
    if has_checkpoint(run_dir):
        return config_from_dict(load_resume_state(run_dir)[0]["config"])
    last = checkpoint_paths(run_dir, "last")[1]
    if not run_dir.is_dir():
        raise MissingPathError(f"no checkpoint to resume from: {run_dir} is not a directory")
    with RunLock(run_dir):  # a live run that has not checkpointed yet: "in use by pid N"
        pass
    _check_run_files_are_files(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise MissingPathError(f"no checkpoint to resume from: {last} does not exist and {run_dir} has no "
                               f"config.yaml; start a new run into it with senet train --out {run_dir}")
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"{run_dir / 'config.yaml'} is not a valid config: {detail}") from None
    return config_from_dict(data)
