"""The fused SE operator: the squeeze (Eq. 2) and the scaling of Eq. 4 together with the residual
addition and ReLU that follow it in a residual unit, ``relu(u * s + shortcut)``, in one pass.

In PyTorch the SE block's price on a GPU is not its FLOPs (+0.26% for SE-ResNet-50, paper §4)
but memory traffic: the broadcasting product ``u * s``, its backward, the add and the ReLU are
separate element-wise kernels, each reading and writing the whole activation. Here one Triton
kernel reads ``u`` and ``shortcut`` once and writes the output once, and one backward kernel
produces ``grad_u``, ``grad_shortcut`` and the reduction ``grad_s = sum_hw(g' * u)`` in the same
pass. The tiny excitation FCs stay in PyTorch. The plain network's ``relu(u + shortcut)`` uses
the same kernel (no scaling), so an SE/plain ratio measures SE alone.

Dispatch (:func:`use_fused`): the fused path runs when a module's ``fused`` flag allows it
(``None``: on CUDA when Triton imports; ``True``: also on CPU under ``TRITON_INTERPRET=1``;
``False``: never), never while tracing, scripting or exporting to ONNX (export needs the reference
composition), nor under ``torch.compile`` (Inductor fuses the reference composition itself), and not
when the environment sets ``SENET_FUSED=0``. :func:`set_fused` flips the
flag on every module of a built model. Triton is imported lazily, on first use.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch
from torch import nn

__all__ = ["use_fused", "triton_available", "set_fused", "squeeze_mean", "se_apply", "add_relu", "FUSED_ENV"]

FUSED_ENV = "SENET_FUSED"


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton imports (it is an optional extra: ``pip install 'senet[gpu]'``)."""
    try:
        from . import _triton_se  # noqa: F401
    except Exception:  # ImportError, or a Triton that cannot initialise on this machine
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _exporting() -> bool:
    # Under torch.compile the reference composition is what Inductor should see: it fuses the
    # element-wise tail itself, and Dynamo cannot trace into the interpreter or the launchers.
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch.export (newer torch)
    if is_exporting is not None and is_exporting():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def use_fused(flag: bool | None, x: torch.Tensor) -> bool:
    """Whether a module with fused flag ``flag`` takes the fused path for input ``x`` (see module doc)."""
    if flag is False or _exporting() or os.environ.get(FUSED_ENV, "1") == "0":
        return False
    if x.device.type != "cuda" and not (flag is True and x.device.type == "cpu" and _interpreting()):
        return False
    if x.ndim != 4 or not _mergeable(x):
        return False
    return triton_available()


def _mergeable(x: torch.Tensor) -> bool:
    """H and W can be walked as one axis (contiguous NCHW or channels_last, or any such view)."""
    return x.stride(2) == x.stride(3) * x.shape[3] or x.shape[2] == 1


def set_fused(model: nn.Module, enabled: bool | None) -> nn.Module:
    """Set the fused flag of every module of ``model`` that has one (SE blocks, residual units).

    ``True`` forces the fused path wherever it applies (CUDA, or CPU under ``TRITON_INTERPRET=1``),
    ``False`` keeps the reference PyTorch composition, ``None`` (the default) is auto: fused on CUDA
    when Triton imports. Returns ``model``.
    """
    if enabled not in (None, True, False):
        raise TypeError(f"set_fused: enabled must be True, False or None, got {enabled!r}")
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = enabled
    return model


def _like(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if H and W merge into one axis, else a contiguous copy (the kernels need it)."""
    return x if _mergeable(x) else x.contiguous()


class _Squeeze(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor) -> torch.Tensor:
        from . import _triton_se

        ctx.shape = u.shape
        z = _triton_se.squeeze_mean(u).to(u.dtype)
        return z.view(u.shape[0], u.shape[1], 1, 1)

    @staticmethod
    def backward(ctx: Any, gz: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        # d mean / d u = 1/HW everywhere: a broadcast view, no HW-sized buffer (autograd adds it).
        return (gz.reshape(n, c, 1, 1) / (h * w)).expand(n, c, h, w)


class _Apply(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, s: torch.Tensor | None, shortcut: torch.Tensor | None,
                relu: bool) -> torch.Tensor:
        from . import _triton_se

        s2 = s.reshape(u.shape[0], u.shape[1]).contiguous() if s is not None else None
        y = _triton_se.apply(u, s2, shortcut, relu)
        ctx.relu, ctx.has_res = relu, shortcut is not None
        ctx.s_shape = s.shape if s is not None else None
        ctx.s_dtype = s.dtype if s is not None else None
        ctx.save_for_backward(y if relu else None, u if s is not None else None, s2)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from . import _triton_se

        y, u, s2 = ctx.saved_tensors
        g = _like(g)
        need_res = ctx.has_res and ctx.needs_input_grad[2]
        if s2 is None:
            if not ctx.relu:  # plain add: the gradient passes through unchanged
                return g, None, g if ctx.has_res else None, None
            _, _, gr = _triton_se.apply_backward(g, y, None, None, need_res=True)
            return gr, None, gr if ctx.has_res else None, None
        gu, gs, gr = _triton_se.apply_backward(g, y, u, s2, need_res)
        gs = gs.to(ctx.s_dtype).reshape(ctx.s_shape) if ctx.needs_input_grad[1] else None
        return gu, gs, gr, None


def squeeze_mean(u: torch.Tensor) -> torch.Tensor:
    """Global average pooling (Eq. 2) of an (N, C, H, W) tensor as one Triton reduction;
    returns (N, C, 1, 1) in ``u``'s dtype (the sum is accumulated in fp32)."""
    return _Squeeze.apply(_like(u))


def se_apply(u: torch.Tensor, s: torch.Tensor, shortcut: torch.Tensor | None = None,
             relu: bool = False) -> torch.Tensor:
    """``u * s`` (Eq. 4), plus ``shortcut`` and a ReLU when given (the residual unit's
    ``relu(u * s + shortcut)``), in one pass forward and one pass backward.

    ``s`` has shape (N, C, 1, 1) or (N, C). The output has ``u``'s dtype and memory format.
    """
    _check(u, shortcut)
    if s.numel() != u.shape[0] * u.shape[1]:
        raise ValueError(f"se_apply: s must hold one value per (n, c) of u {tuple(u.shape)}, got {tuple(s.shape)}")
    return _Apply.apply(_like(u), s, None if shortcut is None else _like(shortcut), relu)


def add_relu(u: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(u + shortcut)``, the plain residual unit's end, with the same kernel as :func:`se_apply`."""
    _check(u, shortcut)
    return _Apply.apply(_like(u), None, _like(shortcut), True)


def _check(u: torch.Tensor, shortcut: torch.Tensor | None) -> None:
    if u.ndim != 4:
        raise ValueError(f"fused SE expects an (N, C, H, W) tensor, got shape {tuple(u.shape)}")
    if shortcut is not None and (shortcut.shape != u.shape or shortcut.dtype != u.dtype):
        raise ValueError(f"fused SE: shortcut {tuple(shortcut.shape)} {shortcut.dtype} does not match "
                         f"u {tuple(u.shape)} {u.dtype}")
