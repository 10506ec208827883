"""CPU thread count of a run: ``TrainConfig.threads`` / ``senet train --threads N``.

Why it is a config field: PyTorch splits a CPU reduction (a convolution's or a matmul's sum,
BN statistics) over its intra-op threads, and floating-point addition is not associative, so
the same run with 1, 2 or 4 threads gives different bits after the first step and different
final errors after a few epochs (docs/results.md gives the spread). Fixing the thread count
(and running on the same kind of CPU, see ``env.json``'s ``cpu_capability``) makes a CPU run
bit-for-bit reproducible. On a shared machine fewer threads than cores also avoids
oversubscription.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, TypeVar

import torch

from ..device import intra_op_threads

__all__ = ["intra_op_threads", "applies_threads", "busy_cpu_note", "cpu_busy"]

F = TypeVar("F", bound=Callable[..., Any])


def applies_threads(fn: F) -> F:
    """Decorate ``fn(cfg, ...)`` so that it runs under ``intra_op_threads(cfg.threads)``."""

    @functools.wraps(fn)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        with intra_op_threads(cfg.threads):
            return fn(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def cpu_busy(load: float, cores: int, threads: int) -> bool:
    """Whether ``threads`` compute threads would oversubscribe ``cores`` cores that already run
    ``load`` (the 1-minute load average, which counts this process once: it is subtracted), with
    at least one core's worth of work from other processes."""
    others = max(load - 1.0, 0.0)
    return threads > 1 and others >= 1.0 and others + threads > cores


def busy_cpu_note(threads: int = 0) -> str | None:
    """A one-line suggestion of ``--threads 1`` when other processes keep the CPU busy and the run
    would use torch's default thread count (``threads=0``); None otherwise. On a shared CPU every
    extra thread waits for the others at each parallel region, which can make training slower
    than one thread."""
    if threads != 0 or not hasattr(os, "getloadavg"):
        return None
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    in_use = torch.get_num_threads()
    if not cpu_busy(load, cores, in_use):
        return None
    return (f"the CPU is busy (load average {load:.1f} on {cores} cores) and training would use "
            f"{in_use} threads; --threads 1 may be faster here")
