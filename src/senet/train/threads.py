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
from typing import Any, Callable, TypeVar

from ..device import intra_op_threads

__all__ = ["intra_op_threads", "applies_threads"]

F = TypeVar("F", bound=Callable[..., Any])


def applies_threads(fn: F) -> F:
    """Decorate ``fn(cfg, ...)`` so that it runs under ``intra_op_threads(cfg.threads)``."""

    @functools.wraps(fn)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        with intra_op_threads(cfg.threads):
            return fn(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
