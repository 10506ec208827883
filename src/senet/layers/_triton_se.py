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
import inspect
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


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _require_layout(ref: torch.Tensor, *full: torch.Tensor | None, small: tuple[torch.Tensor | None, ...] = ()) -> None:
    """The plans' precondition, the layout rule of :mod:`senet.layers.fused_se`: ``ref`` dense, every
    full-size tensor with ref's shape, dtype and exact strides, every per-(n, c) tensor contiguous.
    The dispatch never breaks it; a caller that does is a bug, refused before any launch."""
    if ref.ndim != 4 or not _dense(ref):
        raise RuntimeError(f"fused SE plan: {tuple(ref.shape)} strides {ref.stride()} is not dense NCHW or "
                           f"channels_last")
    for t in full:
        if t is not None and (t.shape != ref.shape or t.stride() != ref.stride() or t.dtype != ref.dtype):
            raise RuntimeError(f"fused SE plan: a tensor {tuple(t.shape)} {t.dtype} strides {t.stride()} does not "
                               f"share the layout of {tuple(ref.shape)} {ref.dtype} strides {ref.stride()}")
    for t in small:
        if t is not None and not t.is_contiguous():
            raise RuntimeError(f"fused SE plan: a per-channel tensor {tuple(t.shape)} is not contiguous")


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
    _require_layout(u, small=(z, part))
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
    _require_layout(u, r, y, small=(s,))
    _check_size(u)
    n, c, h, w = u.shape
    block_hw, block_c = _blocks(u)
    hb, cb = triton.cdiv(h * w, block_hw), triton.cdiv(c, block_c)
    return Launch(_apply_kernel, _check_grid((n * hb * cb,)),
                  (u, s if s is not None else u, r if r is not None else u, y, c, h * w, hb, cb, *strides(u)),
                  dict(HAS_SCALE=s is not None, HAS_RES=r is not None, RELU=relu,
                       BLOCK_HW=block_hw, BLOCK_C=block_c))


def _empty_as(ref: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(ref.shape, ref.stride(), dtype=ref.dtype, device=ref.device)


def backward_buffers(g: torch.Tensor, s: torch.Tensor | None, write_g: bool, write_gu: bool
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(gp, gu, gs, part) for :func:`plan_backward`: gs (N, C) in s's dtype, part when split."""
    gp = _empty_as(g) if write_g else None
    gu = _empty_as(g) if write_gu else None
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
    _require_layout(g, y, u, gp, gu, small=(s, gs, part))
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
    _require_layout(gp, gu, small=(s, gz))
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


# The bounds proof. Each kernel's addressing, restated per program from its grid, block sizes,
# strides and masks: which elements of which argument the program can touch, as the lowest and
# highest element offset from the tensor's first element. ``check_bounds`` asserts that each lies
# inside the tensor's own elements and its storage, and that every 32-bit offset the kernel
# computes for an element it touches fits in 32 bits. tests/test_fused_bounds.py runs it over every
# plan the dispatch makes for SE-ResNet-50 and SE-ResNeXt-50 up to batch 256, past 2**31 elements,
# and over generated shapes, and checks the restatement against what the interpreted kernels do.


@dataclasses.dataclass(frozen=True)
class Footprint:
    """The elements of argument ``arg`` one launch's programs touch: per program (flattened over the
    grid), the lowest and highest element offset from the tensor's first element; a program that
    touches none has ``lo > hi``. ``int32`` is the largest 32-bit offset the kernel computes for it."""

    arg: str
    lo: torch.Tensor
    hi: torch.Tensor
    writes: bool
    int32: int


def _program_ids(grid: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(program_id(0), program_id(1)) of every program of a 1-D or 2-D grid, as int64 tensors."""
    g0, g1 = grid[0], grid[1] if len(grid) > 1 else 1
    pid = torch.arange(g0, dtype=torch.int64).repeat_interleave(g1)
    split = torch.arange(g1, dtype=torch.int64).repeat(g0)
    return pid, split


def _span(lo: torch.Tensor, hi: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The least and greatest of ``i * stride`` for i in [lo, hi] (either sign of stride)."""
    a, b = lo * stride, hi * stride
    return torch.minimum(a, b), torch.maximum(a, b)


def _full(arg: str, n: torch.Tensor, hw: tuple[torch.Tensor, torch.Tensor], c: tuple[torch.Tensor, torch.Tensor],
          strides3: tuple[int, int, int], writes: bool) -> Footprint:
    # off = n * s_n (64-bit) + (hw * s_hw + c * s_c) (32-bit), over the program's unmasked (hw, c).
    s_n, s_c, s_hw = strides3
    hlo, hhi = _span(hw[0], hw[1], s_hw)
    clo, chi = _span(c[0], c[1], s_c)
    empty = (hw[0] > hw[1]) | (c[0] > c[1])
    inner_lo, inner_hi = hlo + clo, hhi + chi
    lo = torch.where(empty, 1, n * s_n + inner_lo)
    hi = torch.where(empty, 0, n * s_n + inner_hi)
    live = ~empty
    int32 = int(torch.maximum(inner_hi.abs(), inner_lo.abs())[live].max()) if live.any() else 0
    return Footprint(arg, lo, hi, writes, int32)


def _per_channel(arg: str, base: torch.Tensor, n: torch.Tensor, C: int, c: tuple[torch.Tensor, torch.Tensor],
                 writes: bool) -> Footprint:
    # base + n * C + c, all 32-bit, over the program's unmasked channels.
    empty = c[0] > c[1]
    lo = torch.where(empty, 1, base + n * C + c[0])
    hi = torch.where(empty, 0, base + n * C + c[1])
    int32 = int(hi[~empty].max()) if (~empty).any() else 0
    return Footprint(arg, lo, hi, writes, int32)


def _channels(rem_c: torch.Tensor, block_c: int, C: int) -> tuple[torch.Tensor, torch.Tensor]:
    c0 = rem_c * block_c
    return c0, torch.clamp(c0 + block_c, max=C) - 1


def _tile_ranges(pid: torch.Tensor, C: int, HW: int, HB: int, CB: int, block_hw: int, block_c: int):
    # As _tile: n, the tile's HW rows and its channels (each masked to the tensor).
    n, rem = pid // (HB * CB), pid % (HB * CB)
    hw0 = (rem // CB) * block_hw
    return n, (hw0, torch.clamp(hw0 + block_hw, max=HW) - 1), _channels(rem % CB, block_c, C)


def _chunk_ranges(pid: torch.Tensor, split: torch.Tensor, C: int, HW: int, CB: int, chunk: int, block_hw: int,
                  block_c: int):
    # As the reduction kernels: n, the HW rows of chunk `split` (the loop's last block may overrun the
    # chunk when chunk is no multiple of BLOCK_HW; the mask stops it at HW), and the channels.
    n = pid // CB
    begin = split * chunk
    last = begin + ((chunk - 1) // block_hw) * block_hw + block_hw - 1 if chunk > 0 else begin - 1
    return n, (begin, torch.clamp(last, max=HW - 1)), _channels(pid % CB, block_c, C)


def _named(plan: Launch) -> dict[str, Any]:
    fn = plan.kernel.fn if hasattr(plan.kernel, "fn") else plan.kernel
    names = [p for p in inspect.signature(fn).parameters if p not in plan.constexprs]
    return {**dict(zip(names, plan.args)), **plan.constexprs}


def footprint(plan: Launch) -> list[Footprint]:
    """What each program of ``plan`` can touch in each tensor it reads or writes (see :class:`Footprint`)."""
    a = _named(plan)
    pid, split = _program_ids(plan.grid)
    name = plan.name
    if name == "_finish_kernel":
        i0 = pid * a["BLOCK"]
        i = (i0, torch.clamp(i0 + a["BLOCK"], max=a["NC"]) - 1)
        empty = i[0] > i[1]
        top = (a["SPLITS"] - 1) * a["NC"] + i[1]
        return [Footprint("part_ptr", torch.where(empty, 1, i[0]), torch.where(empty, 0, top), False,
                          int(top[~empty].max()) if (~empty).any() else 0),
                Footprint("out_ptr", torch.where(empty, 1, i[0]), torch.where(empty, 0, i[1]), True,
                          int(i[1].max()))]
    strides3 = (a["s_n"], a["s_c"], a["s_hw"])
    C, HW, BHW, BC = a["C"], a["HW"], a["BLOCK_HW"], a["BLOCK_C"]
    zero = torch.zeros_like(pid)
    if name in ("_apply_kernel", "_grad_u_kernel"):
        n, hw, c = _tile_ranges(pid, C, HW, a["HB"], a["CB"], BHW, BC)
        if name == "_apply_kernel":
            out = [_full("u_ptr", n, hw, c, strides3, False), _full("y_ptr", n, hw, c, strides3, True)]
            if a["HAS_SCALE"]:
                out.append(_per_channel("s_ptr", zero, n, C, c, False))
            if a["HAS_RES"]:
                out.append(_full("r_ptr", n, hw, c, strides3, False))
            return out
        return [_full("gp_ptr", n, hw, c, strides3, False), _full("gu_ptr", n, hw, c, strides3, True),
                _per_channel("s_ptr", zero, n, C, c, False), _per_channel("gz_ptr", zero, n, C, c, False)]
    n, hw, c = _chunk_ranges(pid, split, C, HW, a["CB"], a["chunk"], BHW, BC)
    row = split * a["NC"]
    if name == "_squeeze_kernel":
        return [_full("u_ptr", n, hw, c, strides3, False), _per_channel("out_ptr", row, n, C, c, True)]
    if name == "_backward_kernel":
        out = [_full("g_ptr", n, hw, c, strides3, False)]
        if a["RELU"]:
            out.append(_full("y_ptr", n, hw, c, strides3, False))
        if a["WRITE_G"]:
            out.append(_full("gp_ptr", n, hw, c, strides3, True))
        if a["HAS_SCALE"]:
            out += [_full("u_ptr", n, hw, c, strides3, False), _per_channel("s_ptr", zero, n, C, c, False),
                    _per_channel("part_ptr", row, n, C, c, True)]
            if a["WRITE_GU"]:
                out.append(_full("gu_ptr", n, hw, c, strides3, True))
        return out
    raise ValueError(f"footprint: unknown kernel {name}")


def _extent(t: torch.Tensor) -> tuple[int, int]:
    """The lowest and highest element offset of ``t``'s own elements from its first one."""
    lo = sum(min(0, st * (sz - 1)) for st, sz in zip(t.stride(), t.shape))
    hi = sum(max(0, st * (sz - 1)) for st, sz in zip(t.stride(), t.shape))
    return lo, hi


def check_bounds(plan: Launch) -> list[Footprint]:
    """Assert that no program of ``plan`` touches an element outside its tensor (its own elements
    and its storage), that no 32-bit offset overflows, and that the grid is within CUDA's limits.
    Returns the footprints. Raises ``AssertionError`` naming the kernel, argument and program."""
    _check_grid(plan.grid)
    a = _named(plan)
    prints = footprint(plan)
    for f in prints:
        t = a[f.arg]
        live = f.lo <= f.hi
        if not live.any():
            continue
        lo, hi = int(f.lo[live].min()), int(f.hi[live].max())
        t_lo, t_hi = _extent(t) if t.numel() else (0, -1)
        first = t.storage_offset()
        stored = t.untyped_storage().nbytes() // t.element_size()
        where = f"{plan.name} {f.arg} {tuple(t.shape)} strides {t.stride()} grid {plan.grid}"
        if lo < t_lo or hi > t_hi:
            bad = int(torch.nonzero(live & ((f.lo < t_lo) | (f.hi > t_hi)))[0])
            raise AssertionError(f"{where}: program {bad} touches elements {int(f.lo[bad])}..{int(f.hi[bad])}, "
                                 f"outside the tensor's {t_lo}..{t_hi}")
        if first + lo < 0 or first + hi >= stored:
            raise AssertionError(f"{where}: touches {first + lo}..{first + hi} of a storage of {stored} elements")
        if f.int32 > _INT32_MAX:
            raise AssertionError(f"{where}: a 32-bit offset reaches {f.int32}")
    return prints
