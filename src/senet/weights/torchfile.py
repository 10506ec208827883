"""Reading a ``torch.save`` file without unpickling arbitrary objects: the one ``torch.load`` of the
program (trainer states, and weight files given as ``pretrained=FILE`` or ``model.weights=FILE``).

``torch.load(weights_only=True)`` refuses any object other than tensors and plain values, and its
message advises re-running with ``weights_only=False``, which would run whatever code the file
carries. That advice is never passed on: :func:`unreadable_reason` says in a few words why a file
cannot be read, and the caller puts it on one line after the file's name.
"""

from __future__ import annotations

import io
import pickletools
import warnings
import zipfile
from typing import Any

import torch

__all__ = ["load_torch_bytes", "unreadable_reason", "is_pickle", "zip_complete"]

_UNSAFE = ("holds objects other than tensors and plain values; it is not loaded, since unpickling them "
           "could run code (if you trust it, save its state dict of tensors with torch.save or safetensors)")


def load_torch_bytes(data: bytes) -> Any:
    """``torch.load(..., weights_only=True)`` of a file's bytes onto the CPU. A plain pickle read as
    a torch file makes torch warn about its protocol before refusing it; only that warning is
    hidden, since :func:`unreadable_reason` names the file for what it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol \d+ in the checkpoint",
                                category=UserWarning)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def is_pickle(data: bytes) -> bool:
    """Whether ``data`` starts as a pickle stream does (torch's legacy format, or any Python pickle):
    the PROTO opcode, read by :mod:`pickletools` (which parses, never executes)."""
    if data[:1] != b"\x80" or len(data) < 2 or data[1] > 5:
        return False
    try:
        next(pickletools.genops(io.BytesIO(data[:64])))
    except Exception:
        return False
    return True


def zip_complete(data: bytes) -> bool:
    """Whether ``data``, a zip archive (torch.save's format), reads whole: every member's CRC checks."""
    try:
        return zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def unreadable_reason(data: bytes, error: BaseException) -> str:
    """Why :func:`load_torch_bytes` refused ``data`` (with ``error``), as words that follow the file's
    name ("is empty", "is truncated or damaged (...)", "is a PyTorch file that holds objects ...")."""
    refused = "Weights only load failed" in str(error)  # torch's refusal of a non-allowlisted object
    if not data:
        return "is empty"
    if data[:4] == b"PK\x03\x04":  # a torch zip archive
        complete = zip_complete(data)
        if refused and complete:
            return f"is a PyTorch file that {_UNSAFE}"
        return f"is truncated or damaged ({type(error).__name__})" if not complete else (
            f"is a zip archive that torch.load cannot read ({type(error).__name__})")
    if is_pickle(data):
        return f"is a Python pickle that {_UNSAFE}" if refused else (
            f"is a Python pickle that is not a torch.save file, or is truncated ({type(error).__name__})")
    return "is not a PyTorch file (neither a torch.save archive nor a legacy torch pickle)"
