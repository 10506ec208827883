"""Cases for the fused SE kernels' tests: the launches the dispatch plans for real networks' unit
shapes (the ahead-of-time compile test and the bounds proof walk the same ones), and tensors in every
layout a user can hand the fused path (the property tests)."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from senet import create_model
from senet.layers import SqueezeExcite
from senet.layers import _triton_se as K
from senet.layers import fused_se


@functools.lru_cache(maxsize=None)
def unit_shapes(name: str, batch: int = 128, size: int = 224) -> tuple[tuple[int, ...], ...]:
    """The (N, C, H, W) of every SE unit's tail in ``name`` (shapes only: built on the meta device)."""
    with torch.device("meta"):
        model = create_model(name)
    shapes: list[tuple[int, ...]] = []
    for m in model.modules():
        if isinstance(m, SqueezeExcite):
            m.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.empty(batch, 3, size, size, device="meta"))
    return tuple(dict.fromkeys(shapes))


def dispatched(shape, dtype: torch.dtype, channels_last: bool, train: bool, se: bool) -> list[K.Launch]:
    """The launches the fused path plans for one unit's tail, ``relu(u * s + shortcut)`` (SE) or
    ``relu(u + shortcut)`` (plain), forward and (``train``) backward, on meta tensors (where
    :func:`senet.layers._triton_se.launch` runs nothing)."""
    with K.recording() as plans:
        _unit_tail(shape, dtype, channels_last, train, se)
    return plans


def _unit_tail(shape, dtype: torch.dtype, channels_last: bool, train: bool, se: bool) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def full(requires_grad: bool = train) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device="meta").contiguous(memory_format=fmt) \
            .requires_grad_(requires_grad)

    u, r = full(), full()
    with torch.set_grad_enabled(train):
        if se:  # s from the fused squeeze through an excitation, as in SqueezeExcite.scale
            w = torch.empty(shape[1], dtype=dtype, device="meta", requires_grad=train)
            s = torch.sigmoid(fused_se.squeeze_mean(u) * w[:, None, None])
            y = fused_se.se_apply(u, s, r, relu=True)
        else:
            y = fused_se.add_relu(u, r)
    if train:
        torch.autograd.grad(y, [u, r], full(False))


# Every way a user's (N, C, H, W) tensor can be laid out. Each builds a leaf ``base`` (what gradients
# are taken with respect to) and the view of it the fused functions receive.
DENSE = ("contiguous", "channels_last", "batch_slice", "storage_offset")
NOT_DENSE = ("channel_slice", "channel_slice_nhwc", "expanded", "transposed")
MISALIGNED = ("misaligned",)
LAYOUTS = DENSE + NOT_DENSE + MISALIGNED


def laid_out(kind: str, shape: tuple[int, int, int, int], dtype: torch.dtype, device: torch.device,
             seed: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(base, view): ``view(base)`` is an (N, C, H, W) tensor laid out as ``kind`` with values drawn
    from ``seed``; ``base`` is a leaf that may require grad."""
    n, c, h, w = shape
    g = torch.Generator().manual_seed(seed)

    def randn(*size: int) -> torch.Tensor:
        return torch.randn(size, generator=g).to(device, dtype)

    numel = n * c * h * w
    if kind == "contiguous":
        return randn(n, c, h, w), lambda b: b
    if kind == "channels_last":
        return randn(n, c, h, w).contiguous(memory_format=torch.channels_last), lambda b: b
    if kind == "batch_slice":  # samples 1..n of n + 2: dense, at an offset of one sample
        return randn(n + 2, c, h, w), lambda b: b[1:1 + n]
    if kind == "storage_offset":  # 16 bytes in: dense and still 16-byte aligned
        k = 16 // torch.empty((), dtype=dtype).element_size()
        return randn(numel + k), lambda b: b[k:].view(n, c, h, w)
    if kind == "misaligned":  # one element in: dense, not 16-byte aligned
        return randn(numel + 1), lambda b: b[1:].view(n, c, h, w)
    if kind == "channel_slice":  # a chunk/split of a wider tensor (the ShuffleNet unit's halves)
        return randn(n, 2 * c, h, w), lambda b: b[:, :c]
    if kind == "channel_slice_nhwc":
        return randn(n, 2 * c, h, w).contiguous(memory_format=torch.channels_last), lambda b: b[:, c:]
    if kind == "expanded":  # one sample broadcast over the batch: stride 0
        return randn(1, c, h, w), lambda b: b.expand(n, c, h, w)
    if kind == "transposed":  # H and W swapped
        return randn(n, c, w, h), lambda b: b.transpose(2, 3)
    raise ValueError(f"unknown layout {kind!r}")
