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

Status: the kernels have been run in Triton's interpreter and compiled ahead of time for sm_80 and
sm_90; they have not yet run or been timed on a GPU. So the fused path is opt-in: every module's
``fused`` flag defaults to ``None``, the reference PyTorch composition, everywhere.

Dispatch (:func:`use_fused`): the fused path runs only when a module's flag is ``True`` (set with
``SqueezeExcite(..., fused=True)``, ``create_model(..., se_fused=True)`` or :func:`set_fused`),
on CUDA, or on the CPU under ``TRITON_INTERPRET=1``, or on the meta device where launches are only
recorded (:mod:`senet.cost.traffic` counts their bytes); never while tracing, scripting or
exporting (an exported graph must run without Triton), and not when the environment sets
``SENET_FUSED=0``. Under ``torch.compile`` the kernels run as custom operators
(``torch.ops.senet.*``).

The layout rule (:func:`admissible`), the one function that decides which tensors a launch may
see: every full-size tensor of a launch (``u``, the shortcut, the output, every gradient) has
``u``'s shape, dtype and device and exactly ``u``'s strides; ``u`` is dense (no gaps, no overlap)
in contiguous NCHW or channels_last; every address is 16-byte aligned, and the layout is one the
kernels compile to 16-byte accesses for (:func:`senet.layers._triton_se.vectorisable`); ``s`` has
``u``'s dtype and one value per (n, c). Inputs that break it run the reference composition;
outputs are allocated with ``u``'s strides, and an incoming gradient that breaks it is first copied
into that layout. The launch plans refuse anything else, and a bounds proof over every plan
(:func:`senet.layers._triton_se.check_bounds`) shows that no program touches memory outside its
tensors. Triton is imported lazily, on first use.
"""

from __future__ import annotations

import functools
import os
import weakref
from types import ModuleType
from typing import Any

import torch
import torch.fx
from torch import nn

from ..errors import UserInputError, UserTypeError

__all__ = ["use_fused", "admissible", "triton_available", "set_fused", "squeeze_mean", "se_apply", "add_relu",
           "FUSED_ENV", "KERNEL_DTYPES"]

FUSED_ENV = "SENET_FUSED"
# The storage dtypes the kernels are written for (loads upcast to fp32, sums in fp32).
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
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
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.fx._symbolic_trace.is_fx_symbolic_tracing():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch.export (newer torch)
    if is_exporting is not None and is_exporting():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and onnx.is_in_onnx_export())


def use_fused(flag: bool | None, x: torch.Tensor) -> bool:
    """Whether a module with fused flag ``flag`` takes the fused path for input ``x`` (see module doc):
    only when asked for (``True``), on a device the kernels run on, and for a layout :func:`admissible`."""
    if flag is not True or _exporting() or os.environ.get(FUSED_ENV, "1") == "0":
        return False
    if not _kernel_device(x):
        return False
    return triton_available() and admissible(x, address=not torch.compiler.is_compiling())


def _kernel_device(x: torch.Tensor) -> bool:
    # CUDA; the CPU only under Triton's interpreter; meta, where launches are recorded, not run.
    return x.device.type in ("cuda", "meta") or x.device.type == "cpu" and _interpreting()


def _dense(t: torch.Tensor) -> bool:
    """No gaps and no overlap, in contiguous NCHW or channels_last (a channel slice, an expanded or
    transposed view is neither; a batch slice of a dense tensor is dense, at an offset)."""
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def admissible(u: torch.Tensor, *others: torch.Tensor | None, s: torch.Tensor | None = None,
               address: bool = True) -> bool:
    """The layout rule of the fused kernels (module doc): whether a launch may read and write ``u``,
    the full-size tensors ``others`` (a shortcut, a gradient; ``None`` entries are skipped) and the
    per-channel scale ``s``. ``address=False`` leaves out the address checks (a traced tensor has no
    address yet)."""
    if u.ndim != 4 or u.dtype not in KERNEL_DTYPES or not _dense(u):
        return False
    for t in others:
        if t is not None and (t.shape != u.shape or t.dtype != u.dtype or t.device != u.device
                              or t.stride() != u.stride() or address and t.data_ptr() % 16):
            return False
    if s is not None and (s.dtype != u.dtype or s.device != u.device or s.numel() != u.shape[0] * u.shape[1]):
        return False
    return _kernels().vectorisable(u, address)


def _empty_as(ref: torch.Tensor) -> torch.Tensor:
    """A new tensor with ``ref``'s shape, dtype, device and exact strides (``ref`` is dense)."""
    return torch.empty_strided(ref.shape, ref.stride(), dtype=ref.dtype, device=ref.device)


def _as_layout(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` itself when :func:`admissible` beside ``ref``, else a copy in ``ref``'s layout: an incoming
    gradient's layout is autograd's choice (an expanded ``ones`` from ``.sum()``, say), not ours."""
    return t if admissible(ref, t) else _empty_as(ref).copy_(t)


def set_fused(model: nn.Module, enabled: bool | None) -> nn.Module:
    """Set the fused flag of every module of ``model`` that has one (SE blocks, residual units).

    ``True`` takes the fused path wherever it applies (CUDA, or CPU under ``TRITON_INTERPRET=1``, for
    the layouts :func:`admissible` admits); ``False`` and ``None`` (the default) keep the reference
    PyTorch composition. Returns ``model``.
    """
    if enabled not in (None, True, False):
        raise UserTypeError(f"set_fused: enabled must be True, False or None, got {enabled!r}")
    for m in model.modules():
        if hasattr(m, "fused"):
            m.fused = enabled
    return model


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
            gu = _empty_as(gp)
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
        y = _empty_as(u)  # u's exact strides: the layout rule (module doc)
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
        need_u, need_s, need_r = ctx.needs_input_grad[:3]
        need_r = need_r and ctx.has_res
        if s2 is None and not ctx.relu:  # plain add: the gradient passes through unchanged
            return g, None, g if ctx.has_res else None, None, None
        g = _as_layout(g, y if y is not None else u)
        if s2 is None:
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
    """The PyTorch composition: what the fused path computes, and what runs wherever it may not."""
    y = u if s is None else u * s.reshape(u.shape[0], u.shape[1], 1, 1)
    if shortcut is not None:
        y = y + shortcut
    return torch.relu(y) if relu else y


def _takes_kernels(u: torch.Tensor, *others: torch.Tensor | None, s: torch.Tensor | None = None) -> bool:
    """Whether a call of the functions below launches kernels: a device they run on and the layout
    rule; traced tensors are checked without addresses (the operators check those when they run)."""
    return _kernel_device(u) and admissible(u, *others, s=s, address=not torch.compiler.is_compiling())


def squeeze_mean(u: torch.Tensor) -> torch.Tensor:
    """Global average pooling (Eq. 2) of an (N, C, H, W) tensor as one Triton reduction;
    returns (N, C, 1, 1) in ``u``'s dtype (the sum is accumulated in fp32). Tensors outside the
    layout rule (:func:`admissible`) take ``u.mean``."""
    if not _takes_kernels(u):
        return u.mean((2, 3), keepdim=True)
    if torch.compiler.is_compiling():
        return torch.ops.senet.fused_squeeze_mean(u)
    link = _Link(u) if torch.is_grad_enabled() and u.requires_grad else None
    return _Squeeze.apply(u, link)


def se_apply(u: torch.Tensor, s: torch.Tensor, shortcut: torch.Tensor | None = None,
             relu: bool = False) -> torch.Tensor:
    """``u * s`` (Eq. 4), plus ``shortcut`` and a ReLU when given (the residual unit's
    ``relu(u * s + shortcut)``), in one pass forward and one pass backward.

    ``s`` has shape (N, C, 1, 1) or (N, C). The output has ``u``'s dtype and strides. When
    ``s`` was computed from :func:`squeeze_mean` of the same ``u``, the backward writes grad_u once,
    the squeeze's gradient included. Tensors outside the layout rule (:func:`admissible`) take the
    PyTorch composition.
    """
    _check(u, shortcut)
    if s.numel() != u.shape[0] * u.shape[1]:
        raise UserInputError(f"se_apply: s must hold one value per (n, c) of u {tuple(u.shape)}, got {tuple(s.shape)}")
    if not _takes_kernels(u, shortcut, s=s):
        return _reference(u, s, shortcut, relu)
    if torch.compiler.is_compiling():
        return torch.ops.senet.fused_se_apply(u, s.reshape(u.shape[0], u.shape[1]), shortcut, relu)
    linked = torch.is_grad_enabled() and u.requires_grad and s.requires_grad
    return _Apply.apply(u, s, shortcut, relu, _find_link(s, u) if linked else None)


def add_relu(u: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """``relu(u + shortcut)``, the plain residual unit's end, with the same kernel as :func:`se_apply`."""
    _check(u, shortcut)
    if not _takes_kernels(u, shortcut):
        return _reference(u, None, shortcut, True)
    if torch.compiler.is_compiling():
        return torch.ops.senet.fused_se_apply(u, None, shortcut, True)
    return _Apply.apply(u, None, shortcut, True, None)


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
    if not admissible(u):
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
    if not admissible(u, shortcut, s=s):
        return _reference(u, s, shortcut, relu)
    y = _empty_as(u)
    K.run(K.plan_apply(u, None if s is None else s.contiguous(), shortcut, y, relu))
    return y


@_op_apply.register_fake
def _(u: _Tensor, s: _Tensor | None, shortcut: _Tensor | None, relu: bool) -> _Tensor:
    return torch.empty_like(u)


@torch.library.custom_op("senet::fused_se_apply_backward", mutates_args=())
def _op_apply_backward(g: _Tensor, y: _Tensor, u: _Tensor, s: _Tensor, relu: bool) -> tuple[_Tensor, _Tensor, _Tensor]:
    """(grad_u, grad_s, grad_shortcut) of ``act(u * s + shortcut)``; ``y`` is the output (ReLU mask)."""
    K = _kernels()
    if not admissible(u, y, s=s):  # the reference composition's gradients
        gp = torch.where(y <= 0, 0, g) if relu else g.clone()
        return gp * s[:, :, None, None], (gp * u).sum((2, 3)).to(s.dtype), gp
    g = _as_layout(g, u)
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
    if not admissible(y):
        return torch.where(y <= 0, 0, g)
    g = _as_layout(g, y)
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
