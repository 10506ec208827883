"""Triton kernels of the fused SE operator (see :mod:`senet.layers.fused_se`).

Imported only by :mod:`senet.layers.fused_se` when the fused path runs, never by ``import senet``:
Triton is an optional extra. Every tensor is seen as (N, C, HW) through its strides, so one kernel
serves contiguous NCHW (HW stride 1) and channels_last (C stride 1) tensors; Triton specialises
the unit stride and vectorises along whichever axis is contiguous. Loads are upcast to fp32 and
every sum is accumulated in fp32, whatever the storage dtype (fp32, bf16, fp16).

Reductions over HW (the squeeze, Eq. 2, and the gradient of s) split HW into ``splits`` chunks
when N x C alone gives too few programs to fill the device; each chunk writes its partial sums to
its own row of a (splits, N, C) buffer that PyTorch sums afterwards, so results are deterministic
(no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Enough programs in flight to fill a large GPU (an H100 has 132 SMs).
_TARGET_PROGRAMS = 1024


@triton.jit
def _squeeze_kernel(u_ptr, part_ptr, C, HW, chunk, su_n, su_c, su_hw,
                    BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    cb = tl.program_id(1)
    split = tl.program_id(2)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    hw0 = tl.arange(0, BLOCK_HW)
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    begin = split * chunk
    for start in range(begin, begin + chunk, BLOCK_HW):
        hw = start + hw0
        m = (hw < HW)[:, None] & cmask[None, :]
        ptr = u_ptr + n * su_n + hw[:, None] * su_hw + c[None, :] * su_c
        acc += tl.load(ptr, mask=m, other=0.0).to(tl.float32)
    total = tl.sum(acc, axis=0)
    tl.store(part_ptr + (split * tl.num_programs(0) + n) * C + c, total, mask=cmask)


@triton.jit
def _apply_kernel(u_ptr, s_ptr, r_ptr, y_ptr, C, HW,
                  su_n, su_c, su_hw, sr_n, sr_c, sr_hw, sy_n, sy_c, sy_hw,
                  HAS_SCALE: tl.constexpr, HAS_RES: tl.constexpr, RELU: tl.constexpr,
                  BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    n = tl.program_id(0)
    hw = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (hw < HW)[:, None] & (c < C)[None, :]
    y = tl.load(u_ptr + n * su_n + hw[:, None] * su_hw + c[None, :] * su_c, mask=m, other=0.0).to(tl.float32)
    if HAS_SCALE:
        s = tl.load(s_ptr + n * C + c, mask=c < C, other=0.0).to(tl.float32)
        y = y * s[None, :]
    if HAS_RES:
        y += tl.load(r_ptr + n * sr_n + hw[:, None] * sr_hw + c[None, :] * sr_c, mask=m, other=0.0).to(tl.float32)
    if RELU:
        y = tl.maximum(y, 0.0)
    yp = y_ptr + n * sy_n + hw[:, None] * sy_hw + c[None, :] * sy_c
    tl.store(yp, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _apply_backward_kernel(g_ptr, y_ptr, u_ptr, s_ptr, gu_ptr, gr_ptr, part_ptr, C, HW, chunk,
                           sg_n, sg_c, sg_hw, sy_n, sy_c, sy_hw, su_n, su_c, su_hw,
                           sgu_n, sgu_c, sgu_hw, sgr_n, sgr_c, sgr_hw,
                           HAS_SCALE: tl.constexpr, WRITE_RES: tl.constexpr, RELU: tl.constexpr,
                           BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    # One pass over g (and y for the ReLU mask, u for grad_s): g' = g * [y > 0],
    # grad_u = g' * s, grad_shortcut = g', and partial sums of g' * u over this HW chunk.
    n = tl.program_id(0)
    cb = tl.program_id(1)
    split = tl.program_id(2)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    hw0 = tl.arange(0, BLOCK_HW)
    if HAS_SCALE:
        s = tl.load(s_ptr + n * C + c, mask=cmask, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_HW, BLOCK_C), dtype=tl.float32)
    begin = split * chunk
    for start in range(begin, begin + chunk, BLOCK_HW):
        hw = start + hw0
        m = (hw < HW)[:, None] & cmask[None, :]
        g = tl.load(g_ptr + n * sg_n + hw[:, None] * sg_hw + c[None, :] * sg_c, mask=m, other=0.0).to(tl.float32)
        if RELU:
            y = tl.load(y_ptr + n * sy_n + hw[:, None] * sy_hw + c[None, :] * sy_c, mask=m, other=0.0)
            g = tl.where(y > 0, g, 0.0)
        if WRITE_RES:
            grp = gr_ptr + n * sgr_n + hw[:, None] * sgr_hw + c[None, :] * sgr_c
            tl.store(grp, g.to(gr_ptr.dtype.element_ty), mask=m)
        if HAS_SCALE:
            u = tl.load(u_ptr + n * su_n + hw[:, None] * su_hw + c[None, :] * su_c, mask=m, other=0.0)
            acc += g * u.to(tl.float32)
            gup = gu_ptr + n * sgu_n + hw[:, None] * sgu_hw + c[None, :] * sgu_c
            tl.store(gup, (g * s[None, :]).to(gu_ptr.dtype.element_ty), mask=m)
    if HAS_SCALE:
        total = tl.sum(acc, axis=0)
        tl.store(part_ptr + (split * tl.num_programs(0) + n) * C + c, total, mask=cmask)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(N, C, HW) strides of a 4-D tensor whose H and W can be merged (NCHW or channels_last)."""
    return t.stride(0), t.stride(1), t.stride(3)


def _blocks(t: torch.Tensor) -> tuple[int, int]:
    """(BLOCK_HW, BLOCK_C): the long side of the tile along the contiguous axis."""
    channels_last = t.stride(1) == 1 and t.shape[1] > 1
    return (16, 64) if channels_last else (128, 8)


def _splits(n: int, cblocks: int, hw: int, block_hw: int) -> tuple[int, int]:
    """How many HW chunks to split a reduction into, and the chunk length (a multiple of block_hw)."""
    hw_blocks = triton.cdiv(hw, block_hw)
    splits = max(1, min(hw_blocks, triton.cdiv(_TARGET_PROGRAMS, n * cblocks)))
    chunk = triton.cdiv(hw_blocks, splits) * block_hw
    return triton.cdiv(hw, chunk), chunk


def squeeze_mean(u: torch.Tensor) -> torch.Tensor:
    """Per-(n, c) mean over H x W (Eq. 2), accumulated in fp32; returns (N, C) fp32."""
    n, c, h, w = u.shape
    hw = h * w
    block_hw, block_c = _blocks(u)
    cblocks = triton.cdiv(c, block_c)
    splits, chunk = _splits(n, cblocks, hw, block_hw)
    part = torch.empty((splits, n, c), device=u.device, dtype=torch.float32)
    _squeeze_kernel[(n, cblocks, splits)](u, part, c, hw, chunk, *_strides(u), BLOCK_HW=block_hw, BLOCK_C=block_c)
    return part.sum(0).div_(hw)


def apply(u: torch.Tensor, s: torch.Tensor | None, shortcut: torch.Tensor | None, relu: bool) -> torch.Tensor:
    """``act(u * s + shortcut)`` in one pass; ``s`` is (N, C) contiguous or None (no scaling)."""
    n, c, h, w = u.shape
    y = torch.empty_like(u)  # keeps u's memory format
    block_hw, block_c = _blocks(u)
    grid = (n, triton.cdiv(h * w, block_hw), triton.cdiv(c, block_c))
    r = shortcut if shortcut is not None else u
    _apply_kernel[grid](u, s if s is not None else u, r, y, c, h * w, *_strides(u), *_strides(r), *_strides(y),
                        HAS_SCALE=s is not None, HAS_RES=shortcut is not None, RELU=relu,
                        BLOCK_HW=block_hw, BLOCK_C=block_c)
    return y


def apply_backward(g: torch.Tensor, y: torch.Tensor | None, u: torch.Tensor | None, s: torch.Tensor | None,
                   need_res: bool) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`apply`: (grad_u, grad_s as (N, C) fp32, grad_shortcut).

    ``y`` is the forward output (its sign is the ReLU mask; None without ReLU); ``u`` and ``s``
    are None without scaling, in which case grad_u is grad_shortcut (returned once, as the latter).
    """
    n, c, h, w = g.shape
    hw = h * w
    block_hw, block_c = _blocks(g)
    cblocks = triton.cdiv(c, block_c)
    has_scale = s is not None
    splits, chunk = _splits(n, cblocks, hw, block_hw) if has_scale else (triton.cdiv(hw, block_hw), block_hw)
    gu = torch.empty_like(u) if has_scale else None
    gr = torch.empty_like(g) if need_res else None
    part = torch.empty((splits, n, c), device=g.device, dtype=torch.float32) if has_scale else None
    dummy = g
    _apply_backward_kernel[(n, cblocks, splits)](
        g, y if y is not None else dummy, u if u is not None else dummy, s if has_scale else dummy,
        gu if gu is not None else dummy, gr if gr is not None else dummy, part if part is not None else dummy,
        c, hw, chunk, *_strides(g), *_strides(y if y is not None else g), *_strides(u if u is not None else g),
        *_strides(gu if gu is not None else g), *_strides(gr if gr is not None else g),
        HAS_SCALE=has_scale, WRITE_RES=need_res, RELU=y is not None, BLOCK_HW=block_hw, BLOCK_C=block_c)
    gs = part.sum(0) if part is not None else None
    return gu, gs, gr
