"""Optional packages of the serving extras, imported when first used (never at import time)."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import torch

from ..errors import MissingExtraError

__all__ = ["require", "INT8_OPS"]

# Importing it registers the INT8 operators a quantized torch.export program holds (senet.deploy.quantize).
INT8_OPS = "torchao.quantization.pt2e.quantize_pt2e"


def require(module: str, why: str, extra: str) -> Any:
    """``module``, imported; :class:`MissingExtraError` naming ``why`` and ``pip install 'senet[extra]'``
    when it is not installed."""
    # Importing torchao logs what no user can act on: on a CPU build of torch, that its CUDA extensions
    # (fp8, CUTLASS) do not load, which the x86 INT8 path does not use, and a deprecation in the way it
    # registers a type with torch's pytree. Those two loggers are quiet for the import only.
    logs = [logging.getLogger("torch.utils._pytree")]
    if not torch.cuda.is_available():
        logs.append(logging.getLogger("torchao"))
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{why} needs {module}: pip install 'senet[{extra}]'") from None
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)
