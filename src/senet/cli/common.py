"""Arguments several sub-commands share, declared once."""

from __future__ import annotations

import argparse

import torch

from ..device import resolve_device as _resolve_device

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)"


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a .safetensors checkpoint or a run directory (its best checkpoint)")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def resolve_device(name: str | None) -> torch.device:
    """``--device`` checked against this machine (``senet.device.resolve_device``), or CUDA when
    available, else the CPU."""
    return _resolve_device(name)
