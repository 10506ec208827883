"""Memory a forward pass needs against what is free, estimated before any work starts.

An input size that cannot fit (``--input-size 3x20000x20000``) is refused in one line naming the
size and the estimate, instead of failing later in the allocator or being killed by the system.
The estimate runs the network on the ``meta`` device (shapes only, nothing allocated) and is a
lower bound: a command that passes may still need more, one that fails certainly cannot run.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import UserError, UserInputError
from ..factory import create_model

__all__ = ["available_memory", "forward_bytes", "check_memory", "check_models_fit"]


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes free for a new allocation on ``device`` (default the CPU): Linux's ``MemAvailable``
    for the CPU, the driver's free memory for CUDA; None where it cannot be told."""
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):  # no driver, or a device that does not exist
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def forward_bytes(net: nn.Module, size: Sequence[int], batch: int) -> int | None:
    """A lower bound of the memory one fp32 forward pass of ``net`` holds at once: the input and
    twice the largest output of any module (an output and the next one's), measured on the meta
    device. None if the network does not run there (an op without a meta kernel)."""
    largest = 0

    def record(module: nn.Module, args: Any, out: Any) -> None:
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel())

    meta = net if _on_meta(net) else copy.deepcopy(net).to("meta")
    hooks = [m.register_forward_hook(record) for m in meta.modules()]
    try:
        with torch.no_grad():
            meta(torch.empty(batch, *size, device="meta"))
    except UserError:  # the network's own input check: said here in plain sizes (a trace shows tensor(1))
        raise
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # an op without a meta kernel
        return None
    finally:
        for h in hooks:
            h.remove()
    c, h, w = size
    return 4 * (batch * c * h * w + 2 * largest)


def check_memory(net: nn.Module, size: Sequence[int], batch: int,
                 device: torch.device | str | None = None) -> None:
    """Refuse, before building anything, an input ``size`` (C, H, W) the network does not take or
    whose forward pass at ``batch`` cannot fit in the memory free on ``device`` (default the CPU)."""
    have = available_memory(device)
    need = forward_bytes(net, size, batch)
    if have is not None and need is not None and need > have:
        where = "" if torch.device("cpu" if device is None else device).type == "cpu" else f" on {device}"
        c, h, w = size
        raise UserInputError(f"input_size {c}x{h}x{w} needs more than {need / 2**30:.1f} GiB for a forward pass at "
                             f"batch {batch}; {have / 2**30:.1f} GiB are available{where}: give a smaller input "
                             f"size or batch size")


def check_models_fit(names: Sequence[str], size: Sequence[int], batch: int,
                     device: torch.device | str | None = None) -> None:
    """:func:`check_memory` for registered models by name, each built on the meta device (no
    weights are initialised or allocated)."""
    for name in names:
        with torch.device("meta"):
            net = create_model(name)
        check_memory(net.eval(), size, batch, device)


def _on_meta(net: nn.Module) -> bool:
    tensors = [*net.parameters(), *net.buffers()]
    return bool(tensors) and all(t.is_meta for t in tensors)
