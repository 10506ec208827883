"""Recognising a weights file from its bytes, not its name, and reading a safetensors header.

A safetensors file starts with its JSON header's length (8 bytes, little-endian), then the header,
a JSON object (``__metadata__`` holds string pairs, such as a senet checkpoint's card). This is the
one reader of that layout: checkpoints, published weights and the loaders all use it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import UserInputError

__all__ = ["file_format", "header_size", "safetensors_metadata", "read_file_metadata"]

MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header


def header_size(head: bytes) -> int | None:
    """The JSON header's length if ``head`` (a file's first 9 or more bytes) starts as a
    safetensors file does, else None."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    size = int.from_bytes(head[:8], "little")
    return size if 1 < size <= MAX_HEADER else None


def file_format(path: str | os.PathLike[str]) -> str | None:
    """``"safetensors"``, ``"torch"`` (a ``torch.save`` zip archive or a legacy pickle) or None."""
    with open(path, "rb") as f:
        head = f.read(9)
    if header_size(head) is not None:
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "torch"
    return None


def _metadata(header: Any) -> dict[str, str]:
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a whole safetensors file's bytes (``{}`` when it has none);
    ``ValueError`` when the bytes do not start with a readable header."""
    size = header_size(data[:9])
    if size is None or 8 + size > len(data):
        raise UserInputError("not a complete safetensors header")
    return _metadata(json.loads(data[8:8 + size]))


def read_file_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, reading its header only (``{}`` for any other file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = header_size(head)
            if size is None:
                return {}
            header = json.loads(head[8:] + f.read(size - 1))
    except (OSError, ValueError):
        return {}
    return _metadata(header)
