"""The launches the fused SE path plans for real networks' unit shapes, on meta tensors: the
ahead-of-time compile test and the bounds proof walk the same ones."""

from __future__ import annotations

import functools
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
