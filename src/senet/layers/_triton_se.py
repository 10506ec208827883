"""Triton kernels of the fused SE operator and the plans that launch them (see :mod:`senet.layers.fused_se`).

Imported only by :mod:`senet.layers.fused_se` when the fused path runs, never by ``import senet``:
Triton is an optional extra. Every full-size tensor is seen as (N, C, HW) through its strides, so one
kernel serves contiguous NCHW (HW stride 1) and channels_last (C stride 1) tensors. Loads are upcast
to fp32 and every sum is accumulated in fp32, whatever the storage dtype (fp32, bf16, fp16).

Each launcher is split in two: a pure ``plan_*`` function that, from the tensors' shapes, strides,
dtypes and addresses alone, returns the :class:`Launch` (kernel, grid, arguments, constexprs) it
would run, and :func:`launch`, which runs one. The ahead-of-time compile test builds the same plans
from meta tensors and compiles them for sm_80 and sm_90 (docs/performance.md), so what it checks is what runs.

Dispatch is only offered where the compiled code is vectorised (:func:`vectorisable`): the
contiguous axis (C in channels_last, H x W in NCHW) a multiple of 16 elements and every other
stride a multiple of 16, which is what Triton needs to prove 16-byte alignment. Elsewhere (NCHW at
14x14 or 7x7, odd widths) the caller keeps PyTorch's composition.

Reductions over HW (the squeeze, Eq. 2, and the gradient of s) split HW into ``splits`` chunks
when N x C alone gives too few programs to fill the device; each chunk writes its partial sums to
its own row of a (splits, N x C) fp32 buffer and a second small kernel sums the rows in a fixed
order, so results are deterministic (no atomics). With one split the reduction kernel writes the
result directly in the output dtype.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any, Iterator

import torch
import triton
import triton.language as tl

from ..errors import UserInputError

# Enough programs in flight to fill a large GPU (an H100 has 132 SMs).
_TARGET_PROGRAMS = 1024
_INT32_MAX = 2**31 - 1
_GRID_YZ_MAX = 65535  # CUDA's limit on grid y and z
_ALIGN = 16  # Triton's divisibility specialisation: integers and addresses divisible by 16


@triton.jit
def _squeeze_kernel(u_ptr, out_ptr, C, HW, CB, NC, chunk, scale, s_n, s_c, s_hw,
                    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # Sum of u over one HW chunk of one (n, channel block), times `scale`, into row `split` of out.
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n = pid // CB
    c = (pid % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    base = u_ptr + n.to(tl.int64) * s_n
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    begin = split * chunk
    for start in range(begin, begin + chunk, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        m = (hw < HW)[:, None] & cmask[None, :]
        acc += tl.load(base + hw[:, None] * s_hw + c[None, :] * s_c, mask=m, other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0) * scale
    tl.store(out_ptr + split * NC + n * C + c, total.to(out_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _finish_kernel(part_ptr, out_ptr, NC, SPLITS, BLOCK: tl.constexpr):
    # out = sum over rows of part, in row order (deterministic), cast to out's dtype.
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < NC
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(0, SPLITS):
        acc += tl.load(part_ptr + k * NC + i, mask=m, other=0.0)
    tl.store(out_ptr + i, acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _tile(C, HW, HB, CB, s_n, s_c, s_hw, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # The (BLOCK_HW, BLOCK_C) tile of this program in a grid of N x HB x CB tiles: its sample, its
    # channels and their mask, the tile's mask, and element offsets (64-bit to the sample, 32-bit in it).
    pid = tl.program_id(0)
    n = pid // (HB * CB)
    rem = pid % (HB * CB)
    hw = (rem // CB) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = (rem % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    m = (hw < HW)[:, None] & cmask[None, :]
    off = n.to(tl.int64) * s_n + (hw[:, None] * s_hw + c[None, :] * s_c)
    return n, c, cmask, m, off


@triton.jit
def _apply_kernel(u_ptr, s_ptr, r_ptr, y_ptr, C, HW, HB, CB, s_n, s_c, s_hw,
                  HAS_SCALE: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
                  BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # y = act(u * s + r) on one (BLOCK_HW, BLOCK_C) tile; u, r and y share one layout.
    n, c, cmask, m, off = _tile(C, HW, HB, CB, s_n, s_c, s_hw, BLOCK_HW, BLOCK_C)
    y = tl.load(u_ptr + off, mask=m, other=0.0).to(tl.float32)
    if HAS_SCALE:
        s = tl.load(s_ptr + n * C + c, mask=cmask, other=0.0).to(tl.float32)
        y = y * s[None, :]
    if HAS_RES:
        y += tl.load(r_ptr + off, mask=m, other=0.0).to(tl.float32)
    if RELU:
        y = tl.where(y < 0.0, 0.0, y)  # NaN passes through, as in torch.relu
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _backward_kernel(g_ptr, y_ptr, u_ptr, s_ptr, gp_ptr, gu_ptr, part_ptr, C, HW, CB, NC, chunk,
                     s_n, s_c, s_hw,
                     HAS_SCALE: tl.constexpr, RELU: tl.constexpr, WRITE_G: tl.constexpr,
                     WRITE_GU: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # One pass over one HW chunk of one (n, channel block): g' = g masked by the ReLU (where y <= 0
    # the gradient is 0; NaN in y lets g through, as torch's threshold_backward does), written as
    # gp (the shortcut's gradient), gu = g' * s, and the partial sums of g' * u (the gradient of s).
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n = pid // CB
    c = (pid % CB) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    nbase = n.to(tl.int64) * s_n
    if HAS_SCALE:
        s = tl.load(s_ptr + n * C + c, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    begin = split * chunk
    for start in range(begin, begin + chunk, BLOCK_HW):
        hw = start + tl.arange(0, BLOCK_HW)
        m = (hw < HW)[:, None] & cmask[None, :]
        off = nbase + (hw[:, None] * s_hw + c[None, :] * s_c)
        g = tl.load(g_ptr + off, mask=m, other=0.0).to(tl.float32)
        if RELU:
            y = tl.load(y_ptr + off, mask=m, other=0.0).to(tl.float32)
            g = tl.where(y <= 0.0, 0.0, g)
        if WRITE_G:
            tl.store(gp_ptr + off, g.to(gp_ptr.dtype.element_ty), mask=m)
        if HAS_SCALE:
            acc += g * tl.load(u_ptr + off, mask=m, other=0.0).to(tl.float32)
            if WRITE_GU:
                tl.store(gu_ptr + off, (g * s[None, :]).to(gu_ptr.dtype.element_ty), mask=m)
    if HAS_SCALE:
        total = tl.sum(acc, axis=0)
        tl.store(part_ptr + split * NC + n * C + c, total.to(part_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _grad_u_kernel(gp_ptr, s_ptr, gz_ptr, gu_ptr, C, HW, HB, CB, inv_hw, s_n, s_c, s_hw,
                   BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # grad_u = g' * s + grad_z / HW: the scaling's and the squeeze's gradients in one write.
    n, c, cmask, m, off = _tile(C, HW, HB, CB, s_n, s_c, s_hw, BLOCK_HW, BLOCK_C)
    s = tl.load(s_ptr + n * C + c, mask=cmask, other=0.0).to(tl.float32)
    gz = tl.load(gz_ptr + n * C + c, mask=cmask, other=0.0).to(tl.float32) * inv_hw
    g = tl.load(gp_ptr + off, mask=m, other=0.0).to(tl.float32)
    tl.store(gu_ptr + off, (g * s[None, :] + gz[None, :]).to(gu_ptr.dtype.element_ty), mask=m)


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch: ``kernel[grid](*args, **constexprs, num_warps=num_warps)``."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    constexprs: dict[str, Any]
    num_warps: int = 4

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__ if hasattr(self.kernel, "fn") else self.kernel.__name__

    def traffic(self) -> tuple[int, int]:
        """(bytes read, bytes written) of global memory by this launch, each element once."""
        a, k = self.args, self.constexprs
        reads: list[Any]
        writes: list[Any]
        if self.name == "_squeeze_kernel":
            reads, writes = [a[0]], [a[1]]
        elif self.name == "_finish_kernel":
            reads, writes = [a[0]], [a[1]]
        elif self.name == "_apply_kernel":
            reads = [a[0]] + [a[1]] * k["HAS_SCALE"] + [a[2]] * k["HAS_RES"]
            writes = [a[3]]
        elif self.name == "_backward_kernel":
            reads = [a[0]] + [a[1]] * k["RELU"] + [a[2]] * k["HAS_SCALE"] + [a[3]] * (k["HAS_SCALE"] and k["WRITE_GU"])
            writes = [a[4]] * k["WRITE_G"] + [a[5]] * k["WRITE_GU"] + [a[6]] * k["HAS_SCALE"]
        elif self.name == "_grad_u_kernel":
            reads, writes = [a[0], a[1], a[2]], [a[3]]
        else:
            raise ValueError(f"traffic: unknown kernel {self.name}")
        return sum(t.numel() * t.element_size() for t in reads), sum(t.numel() * t.element_size() for t in writes)


_RECORDER: contextvars.ContextVar[list[Launch] | None] = contextvars.ContextVar("senet_fused_se_launches",
                                                                                  default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Collect every launch made inside the block (they still run; on meta tensors nothing runs)."""
    plans: list[Launch] = []
    token = _RECORDER.set(plans)
    try:
        yield plans
    finally:
        _RECORDER.reset(token)


def launch(plan: Launch) -> None:
    """Run one planned launch on the device of its first tensor argument (not the current device).
    On meta tensors (shapes only, as when counting bytes) there is nothing to compute."""
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.append(plan)
    device = next(a for a in plan.args if isinstance(a, torch.Tensor)).device
    if device.type == "meta":
        return
    with device_of(device):
        plan.kernel[plan.grid](*plan.args, **plan.constexprs, num_warps=plan.num_warps)


def device_of(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``torch.cuda.device(device)`` for a CUDA device (Triton launches on the current one), else a no-op."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def channels_last(t: torch.Tensor) -> bool:
    """Whether C is the contiguous axis of ``t`` (channels_last, or any tensor with 1x1 spatial size)."""
    return t.stride(1) == 1 and t.shape[1] > 1 or t.shape[2] * t.shape[3] == 1


def strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(N, C, HW) strides of a 4-D tensor whose H and W can be merged (NCHW or channels_last)."""
    return t.stride(0), t.stride(1), t.stride(3) if t.shape[3] > 1 else t.stride(2)


def vectorisable(t: torch.Tensor, address: bool = True) -> bool:
    """Whether the kernels compile to 16-byte accesses for ``t``'s layout (see module doc);
    ``address=False`` leaves out the address check (a tensor being traced has none yet)."""
    if t.ndim != 4 or address and t.data_ptr() % _ALIGN:
        return False
    sn, sc, shw = strides(t)
    n, c, h, w = t.shape
    if h > 1 and w > 1 and t.stride(2) != shw * w:
        return False
    if channels_last(t):
        return sc == 1 and c % _ALIGN == 0 and (h * w == 1 or shw % _ALIGN == 0) and sn % _ALIGN == 0
    return shw == 1 and (h * w) % _ALIGN == 0 and sc % _ALIGN == 0 and (n == 1 or sn % _ALIGN == 0)


def _blocks(t: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_HW, BLOCK_C): 1024-element tiles, long along the contiguous axis."""
    return (16, 64) if channels_last(t) else (128, 8)


def _check_size(t: torch.Tensor) -> None:
    n, c, h, w = t.shape
    if c * h * w > _INT32_MAX:
        raise UserInputError(f"fused SE: one sample of {tuple(t.shape)} has {c * h * w} elements, past the "
                             f"kernels' 2**31 - 1 per sample (offsets within a sample are 32-bit)")


def _check_grid(grid: tuple[int, ...]) -> tuple[int, ...]:
    if grid[0] > _INT32_MAX or any(g > _GRID_YZ_MAX for g in grid[1:]):
        raise UserInputError(f"fused SE: grid {grid} is past CUDA's limits (x < 2**31, y and z <= 65535)")
    return grid


def _splits(programs: int, hw: int, block_hw: int) -> tuple[int, int]:
    """How many HW chunks to split a reduction into, and the chunk length (a multiple of block_hw)."""
    hw_blocks = triton.cdiv(hw, block_hw)
    splits = max(1, min(hw_blocks, triton.cdiv(_TARGET_PROGRAMS, programs)))
    chunk = triton.cdiv(hw_blocks, splits) * block_hw
    return triton.cdiv(hw, chunk), chunk


def _reduction(u: torch.Tensor) -> tuple[int, int, int, int, int]:
    """(BLOCK_HW, BLOCK_C, channel blocks, splits, chunk) of a reduction over u's HW."""
    n, c, h, w = u.shape
    block_hw, block_c = _blocks(u)
    cb = triton.cdiv(c, block_c)
    splits, chunk = _splits(n * cb, h * w, block_hw)
    return block_hw, block_c, cb, splits, chunk


def squeeze_buffers(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(z, part): z (N, C) in u's dtype; part (splits, N x C) fp32 when the reduction is split, else None."""
    n, c = u.shape[:2]
    splits = _reduction(u)[3]
    z = torch.empty((n, c), device=u.device, dtype=u.dtype)
    part = torch.empty((splits, n * c), device=u.device, dtype=torch.float32) if splits > 1 else None
    return z, part


def plan_squeeze(u: torch.Tensor, z: torch.Tensor, part: torch.Tensor | None) -> list[Launch]:
    """Launches of the squeeze (Eq. 2): the mean of u over H x W into z (N, C)."""
    _check_size(u)
    n, c, h, w = u.shape
    block_hw, block_c, cb, splits, chunk = _reduction(u)
    out = part if part is not None else z
    plans = [Launch(_squeeze_kernel, _check_grid((n * cb, splits)),
                    (u, out, c, h * w, cb, n * c, chunk, 1.0 / (h * w), *strides(u)),
                    dict(BLOCK_HW=block_hw, BLOCK_C=block_c))]
    if part is not None:
        plans.append(_plan_finish(part, z))
    return plans


def _plan_finish(part: torch.Tensor, out: torch.Tensor) -> Launch:
    nc = part.shape[1]
    return Launch(_finish_kernel, _check_grid((triton.cdiv(nc, 1024),)), (part, out, nc, part.shape[0]),
                  dict(BLOCK=1024))


def plan_apply(u: torch.Tensor, s: torch.Tensor | None, r: torch.Tensor | None, y: torch.Tensor,
               relu: bool) -> Launch:
    """The launch of ``y = act(u * s + r)``; s (N, C) contiguous or None, u, r, y of one layout."""
    _check_size(u)
    n, c, h, w = u.shape
    block_hw, block_c = _blocks(u)
    hb, cb = triton.cdiv(h * w, block_hw), triton.cdiv(c, block_c)
    return Launch(_apply_kernel, _check_grid((n * hb * cb,)),
                  (u, s if s is not None else u, r if r is not None else u, y, c, h * w, hb, cb, *strides(u)),
                  dict(HAS_SCALE=s is not None, HAS_RES=r is not None, RELU=relu,
                       BLOCK_HW=block_hw, BLOCK_C=block_c))


def backward_buffers(g: torch.Tensor, s: torch.Tensor | None, write_g: bool, write_gu: bool
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(gp, gu, gs, part) for :func:`plan_backward`: gs (N, C) in s's dtype, part when split."""
    gp = torch.empty_like(g) if write_g else None
    gu = torch.empty_like(g) if write_gu else None
    if s is None:
        return gp, gu, None, None
    n, c = g.shape[:2]
    splits = _reduction(g)[3]
    gs = torch.empty((n, c), device=g.device, dtype=s.dtype)
    part = torch.empty((splits, n * c), device=g.device, dtype=torch.float32) if splits > 1 else None
    return gp, gu, gs, part


def plan_backward(g: torch.Tensor, y: torch.Tensor | None, u: torch.Tensor | None, s: torch.Tensor | None,
                  gp: torch.Tensor | None, gu: torch.Tensor | None, gs: torch.Tensor | None,
                  part: torch.Tensor | None) -> list[Launch]:
    """Launches of the backward pass over g (see :func:`_backward_kernel`); g, y, u, gp, gu of one layout.

    ``y`` is the forward output (its sign is the ReLU mask; None without ReLU); ``u`` and ``s`` are
    None without scaling. gp receives g' when given, gu receives g' * s when given, gs the gradient of s.
    """
    _check_size(g)
    n, c, h, w = g.shape
    has_scale = s is not None
    block_hw, block_c, cb, splits, chunk = _reduction(g)  # the same grid with or without a reduction
    out = part if part is not None else gs
    plans = [Launch(_backward_kernel, _check_grid((n * cb, splits)),
                    (g, y if y is not None else g, u if u is not None else g, s if has_scale else g,
                     gp if gp is not None else g, gu if gu is not None else g, out if out is not None else g,
                     c, h * w, cb, n * c, chunk, *strides(g)),
                    dict(HAS_SCALE=has_scale, RELU=y is not None, WRITE_G=gp is not None,
                         WRITE_GU=gu is not None, BLOCK_HW=block_hw, BLOCK_C=block_c))]
    if part is not None:
        plans.append(_plan_finish(part, gs))
    return plans


def plan_grad_u(gp: torch.Tensor, s: torch.Tensor, gz: torch.Tensor, gu: torch.Tensor) -> Launch:
    """The launch of ``gu = g' * s + gz / HW`` (s and gz (N, C) contiguous; gp and gu of one layout)."""
    _check_size(gp)
    n, c, h, w = gp.shape
    block_hw, block_c = _blocks(gp)
    hb, cb = triton.cdiv(h * w, block_hw), triton.cdiv(c, block_c)
    return Launch(_grad_u_kernel, _check_grid((n * hb * cb,)),
                  (gp, s, gz, gu, c, h * w, hb, cb, 1.0 / (h * w), *strides(gp)),
                  dict(BLOCK_HW=block_hw, BLOCK_C=block_c))


def run(plans: Launch | list[Launch]) -> None:
    """Launch one plan or several in order, through :func:`launch` (tests count launches there)."""
    for p in [plans] if isinstance(plans, Launch) else plans:
        launch(p)


def kernels() -> Iterator[Any]:
    """Every kernel of this module (for the compile test's inventory)."""
    yield from (_squeeze_kernel, _finish_kernel, _apply_kernel, _backward_kernel, _grad_u_kernel)
