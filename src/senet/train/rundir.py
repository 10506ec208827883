"""The run directory: resolved config, environment, metrics, report and plots of one run.

Layout (written by rank 0 only)::

    config.yaml      resolved TrainConfig (reloadable with senet train --config RUN/config.yaml)
    env.json         package versions, hardware, git commit, world size, device, precision
    metrics.csv      one row per epoch (METRIC_COLUMNS)
    metrics.jsonl    the same, one JSON object per line
    curves.png       loss and top-1/top-5 error per epoch
    report.md        the final table
    checkpoints/     last.* and best.* (see senet.weights.checkpoint)
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..atomic import atomic_write_bytes

__all__ = ["METRIC_COLUMNS", "environment", "write_run_files", "write_config", "write_metrics", "format_table", "final_summary",
           "write_report"]

# Seed 000's per-epoch table (train loss/accuracy/error, val loss, top-1/top-5 error) + lr, time, speed.
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "train_err", "val_loss", "top1_err", "top5_err",
                  "time_s", "images_per_s")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Versions, hardware and source revision to store beside the numbers."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in ("senet", "torch", "numpy", "safetensors", "pyyaml", "pillow")},
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # The kernels' instruction set (AVX2, AVX512, ...): with the thread count it fixes float results.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "git_commit": _git_commit(),
    }
    env.update(extra or {})
    return env


def write_run_files(run_dir: Path, config_yaml: str | None, env: Mapping[str, Any]) -> None:
    """``config.yaml`` (unless None: a resume keeps it until it has a checkpoint) and ``env.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if config_yaml is not None:
        write_config(run_dir, config_yaml)
    atomic_write_bytes(run_dir / "env.json", (json.dumps(env, indent=2) + "\n").encode())


def write_config(run_dir: Path, config_yaml: str) -> None:
    atomic_write_bytes(run_dir / "config.yaml", config_yaml.encode())


def write_metrics(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite metrics.csv and metrics.jsonl from the whole history (so a resumed run never
    duplicates or loses rows, whatever epoch it was interrupted at)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(run_dir / "metrics.csv", buf.getvalue().encode())
    lines = "".join(json.dumps(dict(row)) + "\n" for row in history)
    atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())


def format_table(history: Sequence[Mapping[str, Any]], top5: bool = True) -> str:
    """The per-epoch table (errors in percent), as printed at the end of a run and in report.md;
    ``top5=False`` shows "-" for the top-5 error (5 classes or fewer: it is always 0)."""
    head = f"{'epoch':>5} {'lr':>9} {'train loss':>10} {'train acc':>9} {'train err':>9} " \
           f"{'val loss':>8} {'top-1 err':>9} {'top-5 err':>9} {'time s':>7} {'img/s':>7}"
    rows = [head, "-" * len(head)]
    for m in history:
        top5_text = f"{m['top5_err']:>9.2f}" if top5 else f"{'-':>9}"
        rows.append(f"{m['epoch']:>5d} {m['lr']:>9.2e} {m['train_loss']:>10.4f} {m['train_acc']:>9.2f} "
                    f"{m['train_err']:>9.2f} {m['val_loss']:>8.4f} {m['top1_err']:>9.2f} {top5_text} "
                    f"{m['time_s']:>7.1f} {m['images_per_s']:>7.0f}")
    return "\n".join(rows)


def final_summary(history: Sequence[dict[str, Any]], classes: int,
                  test_name: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """``(final row, best row, summary line)`` of a run: the last epoch's errors and the lowest
    top-1 error, on the test set ``test_name``; the top-5 error only with more than 5 classes."""
    # The latest of tied epochs, as the best checkpoint (saved when an epoch ties or beats every earlier one).
    best = min(reversed(history), key=lambda r: r["top1_err"]) if history else {}
    final = history[-1] if history else {}
    top5 = (f", top-5 error {final.get('top5_err', float('nan')):.2f}%" if classes > 5
            else f" (top-5 error not shown: {classes} classes)")
    return final, best, (f"final: top-1 error {final.get('top1_err', float('nan')):.2f}%{top5}; best top-1 error "
                         f"{best.get('top1_err', float('nan')):.2f}% (epoch {best.get('epoch', '-')}) on {test_name}")


def write_report(run_dir: Path, title: str, history: Sequence[Mapping[str, Any]], summary: str) -> None:
    text = f"# {title}\n\n{summary}\n\nErrors in percent.\n\n```\n{format_table(history)}\n```\n"
    atomic_write_bytes(run_dir / "report.md", text.encode())
