"""How long torch's OpenMP threads spin before they sleep, for the commands that serve a network.

libgomp, torch's OpenMP runtime on Linux, keeps a thread that waits at the end of a parallel region
spinning for ``GOMP_SPINCOUNT`` iterations (300,000 unless set) before it sleeps. On a core that
another process also uses, the spinning thread takes the time slice its partner needs to finish
its share of the region, and every region waits for the slower one: with one of the two cores busy,
SE-ResNet-50's compiled batch-1 forward slowed 3.4-3.6x against ONNX Runtime's 2.3-2.4x, and with a
spin of 10,000 by 2.3-2.5x, beside ONNX Runtime's 2.3-2.4x (docs/results.md, "a loaded core").

libgomp reads the variable once, when it loads, so it is set before torch is imported, and only
where the user has set neither it nor ``OMP_WAIT_POLICY``: their choice wins.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, MutableMapping

__all__ = ["SERVING_COMMANDS", "SERVING_SPINCOUNT", "bound_openmp_spin"]

# `tune` measures what `predict` and `eval` serve, so it runs as they do; `benchmark` also times
# training steps, which `senet train` runs with libgomp's own spin, so it keeps that.
SERVING_COMMANDS = frozenset({"predict", "eval", "tune"})
SERVING_SPINCOUNT = "10000"


def bound_openmp_spin(command: str, environ: MutableMapping[str, str] = os.environ,
                      modules: Mapping[str, object] = sys.modules) -> bool:
    """Set ``GOMP_SPINCOUNT`` for a serving ``command`` (module docstring); whether it was set. Too
    late once torch is imported (``modules``), and never over the user's own setting."""
    if (command not in SERVING_COMMANDS or "torch" in modules
            or "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ):
        return False
    environ["GOMP_SPINCOUNT"] = SERVING_SPINCOUNT
    return True
