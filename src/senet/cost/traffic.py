"""Bytes read and written by a network, eager and with the fused SE operator (docs/cost.md).

Each operator is charged the bytes of its tensor inputs (read) and outputs (written), each
element once per operator: no cache reuse, which is what a memory-bound kernel moves. Views and
allocations move nothing. The count runs on the meta device (shapes only), for inference or for
a training step (forward and backward, no optimiser), along PyTorch's composition (eager) or the
fused SE operator (:mod:`senet.layers.fused_se`), whose Triton launches are planned, not run, on
meta tensors and report their own reads and writes. Totals come per top-level part, per residual
unit (a module with an ``se`` slot) and overall.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import UserInputError
from ..layers import fused_se

__all__ = ["Traffic", "count_traffic", "TRAFFIC_KINDS"]

TRAFFIC_KINDS = ("infer eager", "infer fused", "train eager", "train fused")


@dataclasses.dataclass
class Traffic:
    """Bytes read and written by one pass, in total, per top-level part and per residual unit."""

    read: int = 0
    written: int = 0
    parts: dict[str, int] = dataclasses.field(default_factory=dict)  # read + written
    units: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.read + self.written


def _nbytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements of ``t`` (a broadcast, stride-0 axis is read once)."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


_ALLOCATIONS = ("empty", "new_empty", "empty_like", "empty_strided", "new_empty_strided")


class _TrafficMode(TorchDispatchMode):
    """Adds each operator's bytes read (tensor inputs) and written (tensor outputs) to ``sink``."""

    def __init__(self, sink: Callable[[int, int], None], channels_last: bool) -> None:
        super().__init__()
        self.sink, self.channels_last = sink, channels_last

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if self.channels_last and func is torch.ops.aten.convolution.default:
            # Meta convolutions return NCHW whatever their input; on a GPU the output follows a
            # channels_last input, and which layouts take the fused path depends on it.
            out = torch.empty_like(out, memory_format=torch.channels_last)
        name = func.overloadpacket.__name__
        if func.is_view or name in _ALLOCATIONS or name in ("detach", "lift_fresh"):
            return out  # no data moves
        inputs = args[1:] if name == "copy_" else (args, kwargs)  # copy_ writes its first argument
        self.sink(sum(_nbytes(t) for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)),
                  sum(_nbytes(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)))
        return out


def count_traffic(model: nn.Module, input_size: Sequence[int], *, train: bool, fused: bool,
                  dtype: torch.dtype = torch.float32, batch: int = 1, channels_last: bool = False) -> Traffic:
    """Bytes read and written by inference (``train=False``) or a training step's forward and
    backward, on PyTorch's composition or the fused SE operator (``fused``, needs Triton), on the
    meta device. The fused kernels are planned, not run, there; each reports its own traffic."""
    result = Traffic()
    stack: list[str] = []  # forward: the modules being run; backward: the owner of the running node
    units = {name for name, m in model.named_modules() if name and isinstance(getattr(m, "se", None), nn.Module)}
    tracked = {name: m for name, m in model.named_modules() if name in units or (name and "." not in name)}
    launches: list[Any] = []
    counted = 0
    owner: dict[Any, str] = {}  # autograd node -> innermost tracked module that created it

    def add(read: int, written: int) -> None:
        result.read += read
        result.written += written
        for name in stack:
            bucket = result.units if name in units else result.parts
            bucket[name] = bucket.get(name, 0) + read + written

    def flush() -> None:  # kernels launched since the last operator, under the same module stack
        nonlocal counted
        for plan in launches[counted:]:
            add(*plan.traffic())
        counted = len(launches)

    def sink(read: int, written: int) -> None:
        flush()
        add(read, written)

    def push(name: str) -> Callable[..., None]:
        return lambda *_: (flush(), stack.append(name))[-1]

    def pop(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, args: Any, output: Any) -> None:
            flush()
            stack.pop()
            if train:  # claim the autograd nodes between this module's inputs and outputs
                stop = {t.grad_fn for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)}
                todo = [t.grad_fn for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
                while todo:
                    node = todo.pop()
                    if node is None or node in stop or node in owner:
                        continue
                    owner[node] = name
                    todo.extend(f for f, _ in node.next_functions)
        return hook

    def enter(name: str) -> Callable[..., None]:
        def prehook(*_: Any) -> None:
            flush()
            stack[:] = [name.split(".", 1)[0], name] if "." in name else [name]
        return prehook

    def leave(*_: Any) -> None:
        flush()
        stack.clear()

    handles = []
    for name, m in tracked.items():
        handles += [m.register_forward_pre_hook(push(name)), m.register_forward_hook(pop(name))]
    flags = {m: m.fused for m in model.modules() if hasattr(m, "fused")}
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def meta(shape: Sequence[int], dt: torch.dtype, grad: bool = False) -> torch.Tensor:
        t = torch.empty(shape, dtype=dt, device="meta")
        return (t.contiguous(memory_format=fmt) if t.ndim == 4 else t).requires_grad_(grad)

    tensors = {k: meta(v.shape, dtype if v.is_floating_point() else v.dtype, train and isinstance(v, nn.Parameter))
               for k, v in [*model.named_parameters(), *model.named_buffers()]}
    x = meta((batch, *input_size), dtype)
    was_training = model.training
    fused_se.set_fused(model, fused)
    model.train(train)
    try:
        with _recording(fused) as launches, _TrafficMode(sink, channels_last), torch.set_grad_enabled(train):
            out = functional_call(model, tensors, (x,))
            if train:
                for node, name in owner.items():
                    handles += [node.register_prehook(enter(name)), node.register_hook(leave)]
                out.sum().backward()
            flush()
    finally:
        model.train(was_training)
        for m, flag in flags.items():
            m.fused = flag
        for h in handles:
            h.remove()
    return result


def _recording(fused: bool) -> Any:
    if not fused:
        return contextlib.nullcontext([])
    if not fused_se.triton_available():
        raise UserInputError("counting the fused path's traffic needs Triton (pip install 'senet[gpu]')")
    from ..layers import _triton_se  # the kernels' plans: only with Triton installed

    return _triton_se.recording()
