"""Resuming repairs the whole run directory from the self-contained state file.

A run writes, per epoch: ``last_state.pt``, ``last.safetensors``, (if best) ``best_state.pt``,
``best.safetensors``, ``metrics.csv``, ``metrics.jsonl``, ``curves.png``, and at the end
``report.md``. A kill between any two of these leaves files from different epochs, and a resume
with nothing left to train would never rewrite them. So before training on, :func:`reconcile_run_dir`
rebuilds every derived file from the state being resumed: the weights files, the best checkpoint
(from the state of the best epoch in the history), the metrics and the plot, and removes the
temporary files that killed writes left behind. Every step is idempotent: a kill during
reconciliation is repaired by the next resume. A state without a content hash (an older senet, or
an edited file) is resumed with a warning; what is rebuilt from it is written without a hash too
(it stays unverified), and never replaces a file that verifies.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import MissingPathError, NotAFileError
from ..weights.checkpoint import (UNVERIFIED, CheckpointError, CheckpointMeta, checkpoint_paths, load_state,
                                  read_weights, read_weights_file, write_checkpoint_files)
from .plots import plot_curves
from .rundir import write_metrics

__all__ = ["load_resume_state", "reconcile_run_dir", "best_epoch", "has_checkpoint"]

_NOT_STATE = ("model", "meta", UNVERIFIED)
# What a resume reads from a state file (senet.train.run writes all of them with every checkpoint).
RESUME_KEYS = ("model", "meta", "epoch", "history", "optimizer", "scaler", "rng", "config")


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """Whether ``run_dir`` holds anything in place of a checkpoint state (even a damaged one)."""
    return any(os.path.lexists(checkpoint_paths(run_dir, tag)[1]) for tag in ("last", "best"))


def load_resume_state(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], str, list[str]]:
    """``(state, tag, notes)``: the ``last`` state of ``run_dir``, or, when it is missing or
    damaged, the ``best`` one (``notes`` says so). Raises if neither can be read."""
    problems: list[str] = []
    for tag in ("last", "best"):
        path = checkpoint_paths(run_dir, tag)[1]
        for p in checkpoint_paths(run_dir, tag):
            if p.is_dir():  # it could be neither read nor rewritten
                raise NotAFileError(f"{p} is a directory, not a checkpoint file; move it away "
                                    f"(mv {p} {p}.moved) and resume again")
        try:
            state = load_state(run_dir, tag)
            lacking = [k for k in RESUME_KEYS if k not in state]
            if lacking:  # e.g. an edited file: name it, and try the other checkpoint
                raise CheckpointError(path, f"is not a complete trainer state: it lacks {', '.join(lacking)}")
        except FileNotFoundError:
            problems.append(f"{path} does not exist")
            continue
        except CheckpointError as e:
            problems.append(str(e))
            continue
        notes = [f"warning: {'; '.join(problems)}; resuming from {path.name} (epoch {state['epoch']}) "
                 "instead"] if problems else []
        if state.get(UNVERIFIED):
            notes.append(f"warning: {path} has no content hash (written by an older senet, or edited): "
                         "resuming from unverified weights and state")
        return state, tag, notes
    last = checkpoint_paths(run_dir, "last")[1]
    if all(p.endswith("does not exist") for p in problems):
        raise MissingPathError(f"no checkpoint to resume from: {last} does not exist")
    raise CheckpointError(Path(run_dir), "holds no usable checkpoint to resume from: " + "; ".join(problems))


def best_epoch(history: list[Mapping[str, Any]]) -> int:
    """The epoch whose checkpoint is ``best``: the latest with the lowest top-1 error (``fit``
    saves ``best`` whenever an epoch ties or beats every earlier one)."""
    lowest = min(r["top1_err"] for r in history)
    return max(r["epoch"] for r in history if r["top1_err"] == lowest)


def _weights_current(path: Path, tensors: Mapping[str, Any], meta: CheckpointMeta) -> bool:
    try:
        have, have_meta = read_weights(path)
    except (OSError, CheckpointError):
        return False
    return have_meta == meta and have.keys() == tensors.keys() and all(
        have[k].dtype == tensors[k].dtype and torch.equal(have[k], tensors[k]) for k in have)


def _verifies(path: Path) -> bool:
    """Whether ``path`` is a weights file whose content matches its recorded hash."""
    try:
        return read_weights_file(path)[2]
    except (OSError, CheckpointError):
        return False


def _kept(path: Path, source: str) -> str:
    return (f"warning: kept {path.name}, which verifies, instead of rewriting it from the unverified "
            f"{source} (no content hash)")


def _unverified_note(unverified: bool) -> str:
    return "; written without a content hash, since its source had none (it stays unverified)" if unverified else ""


def reconcile_run_dir(run_dir: str | os.PathLike[str], state: Mapping[str, Any], tag: str = "last",
                      title: str = "") -> list[str]:
    """Make every file of ``run_dir`` agree with ``state`` (loaded from checkpoint ``tag``);
    return one note per repair made (nothing when the directory was consistent)."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    orphans = [p for d in (run_dir, run_dir / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp-*")]
    for p in orphans:
        p.unlink(missing_ok=True)
    if orphans:
        notes.append(f"removed {len(orphans)} temporary file(s) left by an interrupted write")

    history = list(state["history"])
    epoch = int(state["epoch"])
    rest = {k: v for k, v in state.items() if k not in _NOT_STATE}
    unverified = bool(state.get(UNVERIFIED))
    last_meta = CheckpointMeta(CheckpointMeta.from_dict(state["meta"]).card, epoch)
    last_weights = checkpoint_paths(run_dir, "last")[0]
    if tag != "last":  # resumed from best: the last state itself was missing or damaged
        if unverified and _verifies(last_weights):
            notes.append(_kept(last_weights, f"{tag}_state.pt"))
        else:
            write_checkpoint_files(run_dir, "last", state["model"], last_meta, rest, verified=not unverified)
            notes.append(f"rewrote checkpoints/last_state.pt and last.safetensors from {tag} (epoch {epoch})"
                         + _unverified_note(unverified))
    elif not _weights_current(last_weights, state["model"], last_meta):
        if unverified and _verifies(last_weights):
            notes.append(_kept(last_weights, "last_state.pt"))
        else:
            write_checkpoint_files(run_dir, "last", state["model"], last_meta, None, verified=not unverified)
            notes.append(f"rewrote checkpoints/last.safetensors from last_state.pt (epoch {epoch})"
                         + _unverified_note(unverified))

    if history:
        notes += _reconcile_best(run_dir, state, rest, last_meta, history)
        write_metrics(run_dir, history)
        plot_curves(history, run_dir / "curves.png", title)
    return notes


def _reconcile_best(run_dir: Path, state: Mapping[str, Any], rest: Mapping[str, Any], last_meta: CheckpointMeta,
                    history: list[Mapping[str, Any]]) -> list[str]:
    want = best_epoch(history)
    weights_path, state_path = checkpoint_paths(run_dir, "best")
    try:
        best = load_state(run_dir, "best")
        problem = None if best["epoch"] == want else f"holds epoch {best['epoch']}, not the best epoch {want}"
    except (FileNotFoundError, CheckpointError) as e:
        best, problem = None, ("is missing" if isinstance(e, FileNotFoundError) else e.problem)
    if problem is None:
        best_meta = CheckpointMeta.from_dict(best["meta"])
        if _weights_current(weights_path, best["model"], best_meta):
            return []
        unverified = bool(best.get(UNVERIFIED))
        if unverified and _verifies(weights_path):
            return [_kept(weights_path, "best_state.pt")]
        write_checkpoint_files(run_dir, "best", best["model"], best_meta, None, verified=not unverified)
        return [f"rewrote checkpoints/best.safetensors from best_state.pt (epoch {want})" + _unverified_note(unverified)]
    if want == int(state["epoch"]):  # the best epoch is the state being resumed: rebuild from it
        unverified = bool(state.get(UNVERIFIED))
        if unverified and (_verifies(weights_path) or (best is not None and not best.get(UNVERIFIED))):
            kept = weights_path if _verifies(weights_path) else state_path
            return [_kept(kept, "resumed state")]
        meta = dataclasses.replace(last_meta, top1_err=history[-1]["top1_err"])
        write_checkpoint_files(run_dir, "best", state["model"], meta, rest, verified=not unverified)
        return [f"rebuilt checkpoints/best.* from the resumed state (epoch {want}): best_state.pt {problem}"
                + _unverified_note(unverified)]
    return [f"warning: best_state.pt {problem}, and the best epoch ({want}) is not the one being resumed, "
            "so it cannot be rebuilt; the next epoch that ties or beats it becomes best"]
