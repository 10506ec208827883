"""The fused SE operator: the squeeze (Eq. 2) and the scaling of Eq. 4 together with the residual
addition and ReLU that follow it in a residual unit, ``relu(u * s + shortcut)``, in one pass.

In PyTorch the SE block's price on a GPU is not its FLOPs (+0.26% for SE-ResNet-50, paper §4)
but memory traffic: the broadcasting product ``u * s``, its backward, the add and the ReLU are
separate element-wise kernels, each reading and writing the whole activation (docs/cost.md).
Here one Triton kernel reads ``u`` and ``shortcut`` once and writes the output once; backward,
one kernel produces the shortcut's gradient and ``grad_s = sum_hw(g' * u)``, and one more writes
``grad_u`` with the squeeze's gradient included (docs/performance.md). The tiny excitation FCs stay in
PyTorch. The plain network's ``relu(u + shortcut)`` uses the same kernels (no scaling), so an
SE/plain ratio measures SE alone.

Dispatch (:func:`use_fused`): the fused path runs when a module's ``fused`` flag allows it
(``None``: on CUDA when Triton imports; ``True``: also on CPU under ``TRITON_INTERPRET=1`` and on
the meta device, where launches are only recorded (:mod:`senet.cost.traffic` counts their bytes);
``False``: never), never while tracing, scripting or exporting (TorchScript, torch.export, ONNX:
an exported graph must run without Triton), and not when the environment sets ``SENET_FUSED=0``.
Under ``torch.compile`` the auto flag keeps the reference composition (Inductor fuses it itself)
and ``True`` runs the kernels as custom operators (``torch.ops.senet.*``). Only layouts the kernels
compile to 16-byte accesses for are dispatched (docs/performance.md); others keep the reference
composition. :func:`set_fused` flips the flag on every module of a built model. Triton is imported
lazily, on first use.
"""

from __future__ import annotations

import functools
import os
import weakref
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ..errors import UserInputError, UserTypeError

__all__ = ["use_fused", "triton_available", "set_fused", "squeeze_mean", "se_apply", "add_relu", "FUSED_ENV"]

FUSED_ENV = "SENET_FUSED"
_Tensor = torch.Tensor


@torch.compiler.assume_constant_result  # Dynamo reads the answer instead of tracing the import
@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether Triton imports (it is an optional extra: ``pip install 'senet[gpu]'``)."""
    try:
        _kernels()
    except Exception:  # ImportError, or a Triton that cannot initialise on this machine
        return False
    return True


def _kernels() -> ModuleType:
    """The Triton kernels' module, imported at first use: Triton is an optional extra, and
    importing it costs seconds that ``import senet`` and the CPU paths must not pay."""
    from . import _triton_se

    return _triton_se


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _exporting() -> bool:
    # Exported graphs (TorchScript, torch.export, ONNX) must run without Triton: reference ops.
    if torch.jit.is_scripting() or torch.jit.is_tracing():
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
    compiling = torch.compiler.is_compiling()
    if compiling and flag is None:  # auto: Inductor fuses the reference composition itself
        return False
    forced_here = x.device.type == "cpu" and _interpreting() or x.device.type == "meta"  # meta: counting bytes
    if x.device.type != "cuda" and not (flag is True and forced_here):
        return False
    if x.ndim != 4 or not _mergeable(x):
        return False
    return triton_available() and _kernels_vectorise(x, address=not compiling)


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
        raise UserTypeError(f"set_fused: enabled must be True, False or None, got {enabled!r}")
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = enabled
    return model


def _like(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if H and W merge into one axis, else a contiguous copy (the kernels need it)."""
    return x if _mergeable(x) else x.contiguous()


def _same_layout(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with ``ref``'s strides and a 16-byte aligned address (a copy only when it has neither):
    the kernels walk every full-size tensor of a launch with one set of strides."""
    if t.stride() == ref.stride() and t.data_ptr() % 16 == 0:
        return t
    return torch.empty_like(ref).copy_(t)


class _Link:
    """Hands the scaling's backward (g', s) to the backward of the squeeze of the same ``u``.

    ``u`` reaches the loss twice in an SE unit: through ``u * s`` and through the squeeze that
    computes ``s``. Autograd would compute ``g' * s`` in one kernel and add the squeeze's broadcast
    ``grad_z / HW`` with another full pass. Linked, the scaling's backward leaves grad_u to the
    squeeze's backward, which runs after it (``s`` depends on the squeeze), and writes
    ``g' * s + grad_z / HW`` in one kernel.
    """

    def __init__(self, u: torch.Tensor) -> None:
        self.u = weakref.ref(u)
        self.claimed = False
        self.pending: tuple[torch.Tensor, torch.Tensor] | None = None


def _find_link(s: torch.Tensor, u: torch.Tensor) -> _Link | None:
    """The unclaimed link of the fused squeeze of ``u`` that ``s`` was computed from, if any (a walk
    of at most a few dozen autograd nodes: the excitation between them is a handful of ops)."""
    stack, seen = [s.grad_fn], 0
    while stack and seen < 64:
        node = stack.pop()
        seen += 1
        if node is None:
            continue
        link = getattr(node, "senet_link", None)
        if isinstance(link, _Link):
            return link if link.u() is u and not link.claimed else None
        stack.extend(f for f, _ in node.next_functions)
    return None


class _Squeeze(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, link: _Link | None) -> torch.Tensor:
        K = _kernels()
        ctx.shape = u.shape
        ctx.senet_link = link
        z, part = K.squeeze_buffers(u)
        K.run(K.plan_squeeze(u, z, part))
        return z.view(u.shape[0], u.shape[1], 1, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gz: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        K = _kernels()
        n, c, h, w = ctx.shape
        link = ctx.senet_link
        if link is not None and link.pending is not None:
            gp, s2 = link.pending
            link.pending = None
            gu = torch.empty_like(gp)
            K.run(K.plan_grad_u(gp, s2, gz.reshape(n, c).contiguous(), gu))
            return gu, None
        # d mean / d u = 1/HW everywhere: a broadcast view, no HW-sized buffer (autograd adds it).
        return (gz.reshape(n, c, 1, 1) / (h * w)).expand(n, c, h, w), None


class _Apply(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, s: torch.Tensor | None, shortcut: torch.Tensor | None,
                relu: bool, link: _Link | None) -> torch.Tensor:
        K = _kernels()
        s2 = s.reshape(u.shape[0], u.shape[1]).contiguous() if s is not None else None
        y = torch.empty_like(u)  # keeps u's memory format
        K.run(K.plan_apply(u, s2, shortcut, y, relu))
        if link is not None:
            link.claimed = True
        ctx.relu, ctx.has_res, ctx.link = relu, shortcut is not None, link
        ctx.s_shape = s.shape if s is not None else None
        ctx.save_for_backward(y if relu else None, u if s is not None else None, s2)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        K = _kernels()
        y, u, s2 = ctx.saved_tensors
        g = _same_layout(_like(g), y if y is not None else u if u is not None else g)
        need_u, need_s, need_r = ctx.needs_input_grad[:3]
        need_r = need_r and ctx.has_res
        if s2 is None:
            if not ctx.relu:  # plain add: the gradient passes through unchanged
                return g, None, g if ctx.has_res else None, None, None
            gp, _, _, _ = K.backward_buffers(g, None, True, False)
            K.run(K.plan_backward(g, y, None, None, gp, None, None, None))
            return gp, None, gp if ctx.has_res else None, None, None
        link = ctx.link if need_u else None
        # Linked: write g' (unless it is g itself) for the shortcut and the squeeze's backward,
        # which then writes grad_u; else write grad_u = g' * s here.
        write_g = ctx.relu and (need_r or link is not None)
        gp, gu, gs, part = K.backward_buffers(g, s2, write_g, need_u and link is None)
        K.run(K.plan_backward(g, y if ctx.relu else None, u, s2, gp, gu, gs, part))
        gprime = gp if ctx.relu else g
        if link is not None:
            link.pending = (gprime, s2)
        gs = gs.reshape(ctx.s_shape) if need_s else None
        return gu, gs, gprime if need_r else None, None, None


def _reference(u: torch.Tensor, s: torch.Tensor | None, shortcut: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """The PyTorch composition, for layouts the kernels would not vectorise (see :func:`use_fused`)."""
    y = u if s is None else u * s.reshape(u.shape[0], u.shape[1], 1, 1)
    if shortcut is not None:
        y = y + shortcut
    return torch.relu(y) if relu else y


def _kernels_vectorise(u: torch.Tensor, address: bool = True) -> bool:
    return _kernels().vectorisable(u, address)


def squeeze_mean(u: torch.Tensor) -> torch.Tensor:
    """Global average pooling (Eq. 2) of an (N, C, H, W) tensor as one Triton reduction;
    returns (N, C, 1, 1) in ``u``'s dtype (the sum is accumulated in fp32). Layouts the kernels
    would not vectorise take ``u.mean``."""
    u = _like(u)
    if torch.compiler.is_compiling():
        return torch.ops.senet.fused_squeeze_mean(u)
    if not _kernels_vectorise(u):
        return u.mean((2, 3), keepdim=True)
    link = _Link(u) if torch.is_grad_enabled() and u.requires_grad else None
    return _Squeeze.apply(u, link)


def se_apply(u: torch.Tensor, s: torch.Tensor, shortcut: torch.Tensor | None = None,
             relu: bool = False) -> torch.Tensor:
    """``u * s`` (Eq. 4), plus ``shortcut`` and a ReLU when given (the residual unit's
    ``relu(u * s + shortcut)``), in one pass forward and one pass backward.

    ``s`` has shape (N, C, 1, 1) or (N, C). The output has ``u``'s dtype and memory format. When
    ``s`` was computed from :func:`squeeze_mean` of the same ``u``, the backward writes grad_u once,
    the squeeze's gradient included. Layouts the kernels would not vectorise take the PyTorch
    composition.
    """
    _check(u, shortcut)
    if s.numel() != u.shape[0] * u.shape[1]:
        raise UserInputError(f"se_apply: s must hold one value per (n, c) of u {tuple(u.shape)}, got {tuple(s.shape)}")
    u = _like(u)
    if torch.compiler.is_compiling():
        return torch.ops.senet.fused_se_apply(u, s.reshape(u.shape[0], u.shape[1]), shortcut, relu)
    if not _kernels_vectorise(u):
        return _reference(u, s, shortcut, relu)
    shortcut = None if shortcut is None else _same_layout(shortcut, u)
    linked = torch.is_grad_enabled() and u.requires_grad and s.requires_grad
    return _Apply.apply(u, s, shortcut, relu, _find_link(s, u) if linked else None)


def add_relu(u: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(u + shortcut)``, the plain residual unit's end, with the same kernel as :func:`se_apply`."""
    _check(u, shortcut)
    u = _like(u)
    if torch.compiler.is_compiling():
        return torch.ops.senet.fused_se_apply(u, None, shortcut, True)
    if not _kernels_vectorise(u):
        return _reference(u, None, shortcut, True)
    return _Apply.apply(u, None, _same_layout(shortcut, u), True, None)


def _check(u: torch.Tensor, shortcut: torch.Tensor | None) -> None:
    if u.ndim != 4:
        raise UserInputError(f"fused SE expects an (N, C, H, W) tensor, got shape {tuple(u.shape)}")
    if shortcut is not None and (shortcut.shape != u.shape or shortcut.dtype != u.dtype):
        raise UserInputError(f"fused SE: shortcut {tuple(shortcut.shape)} {shortcut.dtype} does not match "
                             f"u {tuple(u.shape)} {u.dtype}")


# The same kernels as custom operators, for torch.compile: Dynamo and Inductor see an opaque op with
# a shape function (register_fake) and a backward (register_autograd), not the Triton launchers.
# Used only while compiling with the fused flag True; eager runs the autograd Functions above, which
# also write the squeeze's gradient with grad_u (a link a traced graph cannot express).


@torch.library.custom_op("senet::fused_squeeze_mean", mutates_args=())
def _op_squeeze(u: _Tensor) -> _Tensor:
    """:func:`squeeze_mean` as an operator: (N, C, 1, 1) in u's dtype."""
    K = _kernels()
    if not K.vectorisable(u):
        return u.mean((2, 3), keepdim=True)
    z, part = K.squeeze_buffers(u)
    K.run(K.plan_squeeze(u, z, part))
    return z.view(u.shape[0], u.shape[1], 1, 1)


@_op_squeeze.register_fake
def _(u: _Tensor) -> _Tensor:
    return u.new_empty((u.shape[0], u.shape[1], 1, 1))


def _squeeze_setup(ctx: Any, inputs: tuple[Any, ...], output: _Tensor) -> None:
    ctx.shape = inputs[0].shape


def _squeeze_backward(ctx: Any, gz: _Tensor) -> _Tensor:
    n, c, h, w = ctx.shape
    return (gz.reshape(n, c, 1, 1) / (h * w)).expand(n, c, h, w)


_op_squeeze.register_autograd(_squeeze_backward, setup_context=_squeeze_setup)


@torch.library.custom_op("senet::fused_se_apply", mutates_args=())
def _op_apply(u: _Tensor, s: _Tensor | None, shortcut: _Tensor | None, relu: bool) -> _Tensor:
    """:func:`se_apply` as an operator; ``s`` is (N, C) or None (the plain ``add_relu``)."""
    K = _kernels()
    if not K.vectorisable(u):
        return _reference(u, s, shortcut, relu)
    y = torch.empty_like(u)
    r = None if shortcut is None else _same_layout(shortcut, u)
    K.run(K.plan_apply(u, None if s is None else s.contiguous(), r, y, relu))
    return y


@_op_apply.register_fake
def _(u: _Tensor, s: _Tensor | None, shortcut: _Tensor | None, relu: bool) -> _Tensor:
    return torch.empty_like(u)


@torch.library.custom_op("senet::fused_se_apply_backward", mutates_args=())
def _op_apply_backward(g: _Tensor, y: _Tensor, u: _Tensor, s: _Tensor, relu: bool) -> tuple[_Tensor, _Tensor, _Tensor]:
    """(grad_u, grad_s, grad_shortcut) of ``act(u * s + shortcut)``; ``y`` is the output (ReLU mask)."""
    K = _kernels()
    g = _same_layout(_like(g), u)
    if not K.vectorisable(u):  # the reference composition's gradients
        gp = torch.where(y <= 0, 0, g) if relu else g.clone()
        return gp * s[:, :, None, None], (gp * u).sum((2, 3)).to(s.dtype), gp
    s = s.contiguous()
    gp, gu, gs, part = K.backward_buffers(g, s, True, True)
    K.run(K.plan_backward(g, y if relu else None, u, s, gp, gu, gs, part))
    return gu, gs, gp


@_op_apply_backward.register_fake
def _(g: _Tensor, y: _Tensor, u: _Tensor, s: _Tensor, relu: bool) -> tuple[_Tensor, _Tensor, _Tensor]:
    return torch.empty_like(u), s.new_empty(s.shape), torch.empty_like(u)


@torch.library.custom_op("senet::fused_relu_backward", mutates_args=())
def _op_relu_backward(g: _Tensor, y: _Tensor) -> _Tensor:
    """The gradient of ``relu(u + shortcut)`` for both inputs, from the output ``y``."""
    K = _kernels()
    g = _same_layout(_like(g), y)
    if not K.vectorisable(y):
        return torch.where(y <= 0, 0, g)
    gp, _, _, _ = K.backward_buffers(g, None, True, False)
    K.run(K.plan_backward(g, y, None, None, gp, None, None, None))
    return gp


@_op_relu_backward.register_fake
def _(g: _Tensor, y: _Tensor) -> _Tensor:
    return torch.empty_like(y)


def _apply_setup(ctx: Any, inputs: tuple[Any, ...], output: _Tensor) -> None:
    u, s, shortcut, relu = inputs
    ctx.relu, ctx.has_s, ctx.has_res = relu, s is not None, shortcut is not None
    ctx.save_for_backward(output, u if s is not None else None, s)


def _apply_backward(ctx: Any, g: _Tensor) -> tuple[_Tensor | None, ...]:
    y, u, s = ctx.saved_tensors
    if not ctx.has_s:
        gp = torch.ops.senet.fused_relu_backward(g, y) if ctx.relu else g
        return gp, None, gp if ctx.has_res else None, None
    gu, gs, gp = torch.ops.senet.fused_se_apply_backward(g, y, u, s, ctx.relu)
    return gu, gs, gp if ctx.has_res else None, None


_op_apply.register_autograd(_apply_backward, setup_context=_apply_setup)
