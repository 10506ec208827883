"""``resolve_device``: the one place a device name is checked and turned into a ``torch.device``;
``intra_op_threads``: torch's CPU thread count for a block (training, benchmarks)."""

from __future__ import annotations

import contextlib
import re
from typing import Iterator

import torch

from .errors import UserInputError, UserTypeError

__all__ = ["resolve_device", "DEVICE_FORMS", "intra_op_threads"]

DEVICE_FORMS = "'cpu', 'cuda', 'cuda:N' or 'mps'"
_PATTERN = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` checked against this machine, or CUDA when available, else the CPU.

    Accepts ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` (or a ``torch.device``). A name of
    another form, CUDA on a build or machine without it, a CUDA index past the visible devices,
    or MPS where Apple's Metal backend is missing fails with a ``ValueError`` saying which.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise UserTypeError(f"device must be a name such as 'cuda:0' or a torch.device, got {type(device).__name__}")
    name = str(device).strip()
    match = _PATTERN.fullmatch(name)
    if match is None or (match.group(1) == "cpu" and match.group(2) not in (None, "0")):
        raise UserInputError(f"device {name!r} is not one of the forms {DEVICE_FORMS}")
    kind, index = match.group(1), match.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                why = f"this PyTorch build ({torch.__version__}) has no CUDA"
            else:
                why = "no GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
            raise UserInputError(f"CUDA was asked for (device {name!r}) but {why}; use device 'cpu'")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise UserInputError(f"device {name!r} does not exist: {count} CUDA device(s) visible "
                                 f"(cuda:0 to cuda:{count - 1})")
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UserInputError(f"device {name!r} asks for Apple's Metal (MPS) backend, which this machine or "
                                 f"PyTorch build lacks; use device 'cpu'")
    return torch.device(name)


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(threads)`` and restore the previous count
    after it (fit leaves no global state behind). ``0``/``None`` keeps torch's current setting.
    Yields the thread count in effect."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise UserInputError(f"threads must be a non-negative integer (0 = torch's default), got {threads!r}")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads:
            torch.set_num_threads(previous)
