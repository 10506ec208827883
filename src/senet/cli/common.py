"""Arguments several sub-commands share, declared once."""

from __future__ import annotations

import argparse

import torch

DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda if available)"


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a .safetensors checkpoint or a run directory (its best checkpoint)")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def resolve_device(name: str | None) -> torch.device:
    """``--device``, or CUDA when available, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
