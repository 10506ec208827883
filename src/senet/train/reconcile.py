"""Resuming repairs the whole run directory from the self-contained state file.

A run writes, per epoch: ``last_state.pt``, ``last.safetensors``, (if best) ``best_state.pt``,
``best.safetensors``, ``metrics.csv``, ``metrics.jsonl``, ``curves.png``, and at the end
``report.md``. A kill between any two of these leaves files from different epochs, and a resume
with nothing left to train would never rewrite them. So before training on, :func:`reconcile_run_dir`
rebuilds every derived file from the state being resumed: the weights files, the best checkpoint
(from the state of the best epoch in the history), the metrics and the plot, and removes the
temporary files that killed writes left behind. Every step is idempotent: a kill during
reconciliation is repaired by the next resume.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..weights.checkpoint import CheckpointError, checkpoint_paths, load_state, read_weights, write_checkpoint_files
from .plots import plot_curves
from .rundir import write_metrics

__all__ = ["load_resume_state", "reconcile_run_dir", "best_epoch", "has_checkpoint"]

_NOT_STATE = ("model", "meta")


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
                raise IsADirectoryError(f"{p} is a directory, not a checkpoint file; move it away "
                                        f"(mv {p} {p}.moved) and resume again")
        try:
            state = load_state(run_dir, tag)
        except FileNotFoundError:
            problems.append(f"{path} does not exist")
            continue
        except CheckpointError as e:
            problems.append(str(e))
            continue
        notes = [f"warning: {'; '.join(problems)}; resuming from {path.name} (epoch {state['epoch']}) "
                 "instead"] if problems else []
        return state, tag, notes
    last = checkpoint_paths(run_dir, "last")[1]
    if all(p.endswith("does not exist") for p in problems):
        raise FileNotFoundError(f"no checkpoint to resume from: {last} does not exist")
    raise CheckpointError(Path(run_dir), "holds no usable checkpoint to resume from: " + "; ".join(problems))


def best_epoch(history: list[Mapping[str, Any]]) -> int:
    """The epoch whose checkpoint is ``best``: the latest with the lowest top-1 error (``fit``
    saves ``best`` whenever an epoch ties or beats every earlier one)."""
    lowest = min(r["top1_err"] for r in history)
    return max(r["epoch"] for r in history if r["top1_err"] == lowest)


def _weights_current(path: Path, tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    import torch

    try:
        have, have_meta = read_weights(path)
    except (OSError, CheckpointError):
        return False
    return have_meta == dict(meta) and have.keys() == tensors.keys() and all(
        have[k].dtype == tensors[k].dtype and torch.equal(have[k], tensors[k]) for k in have)


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
    last_meta = {k: v for k, v in state["meta"].items() if k != "top1_err"}
    last_meta["epoch"] = epoch
    if tag != "last":  # resumed from best: the last state itself was missing or damaged
        write_checkpoint_files(run_dir, "last", state["model"], last_meta, rest)
        notes.append(f"rewrote checkpoints/last_state.pt and last.safetensors from {tag} (epoch {epoch})")
    elif not _weights_current(checkpoint_paths(run_dir, "last")[0], state["model"], last_meta):
        write_checkpoint_files(run_dir, "last", state["model"], last_meta, None)
        notes.append(f"rewrote checkpoints/last.safetensors from last_state.pt (epoch {epoch})")

    if history:
        notes += _reconcile_best(run_dir, state, rest, last_meta, history)
        write_metrics(run_dir, history)
        plot_curves(history, run_dir / "curves.png", title)
    return notes


def _reconcile_best(run_dir: Path, state: Mapping[str, Any], rest: Mapping[str, Any], last_meta: dict[str, Any],
                    history: list[Mapping[str, Any]]) -> list[str]:
    want = best_epoch(history)
    weights_path, state_path = checkpoint_paths(run_dir, "best")
    try:
        best = load_state(run_dir, "best")
        problem = None if best["epoch"] == want else f"holds epoch {best['epoch']}, not the best epoch {want}"
    except (FileNotFoundError, CheckpointError) as e:
        best, problem = None, ("is missing" if isinstance(e, FileNotFoundError) else e.problem)
    if problem is None:
        if _weights_current(weights_path, best["model"], best["meta"]):
            return []
        write_checkpoint_files(run_dir, "best", best["model"], best["meta"], None)
        return [f"rewrote checkpoints/best.safetensors from best_state.pt (epoch {want})"]
    if want == int(state["epoch"]):  # the best epoch is the state being resumed: rebuild from it
        meta = {**last_meta, "top1_err": history[-1]["top1_err"]}
        write_checkpoint_files(run_dir, "best", state["model"], meta, rest)
        return [f"rebuilt checkpoints/best.* from the resumed state (epoch {want}): best_state.pt {problem}"]
    return [f"warning: best_state.pt {problem}, and the best epoch ({want}) is not the one being resumed, "
            "so it cannot be rebuilt; the next epoch that ties or beats it becomes best"]
