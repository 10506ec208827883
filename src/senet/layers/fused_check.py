"""Self-check of the fused SE kernels against float64 and against the PyTorch composition, on the
device they run on: the property tests (tests/test_fused_properties.py) draw cases from here, and
``benchmarks/bench_se.py`` runs a fixed matrix of them before it times anything.

A case is an op (the squeeze, the scaling with or without a shortcut and ReLU, the plain add+ReLU,
a whole :class:`~senet.layers.se.SqueezeExcite` with its linked backward), a shape, a layout of the
input (and of the shortcut), a dtype and a seed. The fused path must either match the float64
truth computed from the same rounded inputs within the dtype's rounding, forward and backward, with
every launch inside its tensors (:func:`senet.layers._triton_se.check_bounds`), or not be taken,
and then give the PyTorch composition's result bit for bit. Only dense, aligned layouts may be taken
(the layout rule, :func:`senet.layers.fused_se.admissible`).
"""

from __future__ import annotations

import copy
import itertools
from typing import Callable, Iterator

import torch

from . import fused_se
from .se import SqueezeExcite

__all__ = ["OPS", "LAYOUTS", "KERNEL_DTYPES", "laid_out", "fills_one_block", "check_case", "matrix"]

EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
KERNEL_DTYPES = tuple(EPS)
OPS = ("squeeze", "apply", "apply_residual", "apply_residual_relu", "add_relu", "module")

# Every way a user's (N, C, H, W) tensor can be laid out. Each builds a leaf ``base`` (what gradients
# are taken with respect to) and the view of it the fused functions receive.
# Dense in general; never dense but in degenerate shapes (a channel slice of one sample, an
# expansion of one sample to one, a transpose of a size-1 axis); dense but misaligned.
DENSE = ("contiguous", "channels_last", "batch_slice", "storage_offset")
NOT_DENSE = ("channel_slice", "channel_slice_nhwc", "expanded", "transposed")
MISALIGNED = ("misaligned",)
LAYOUTS = DENSE + NOT_DENSE + MISALIGNED


def fills_one_block(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill one gap-free, 16-byte aligned block of memory in NCHW or NHWC
    order: the condition the kernels' addressing needs, computed from the element offsets themselves
    (not from torch's contiguity flags, which the dispatch rule uses)."""
    offsets = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(t.shape, t.stride()):
        offsets = offsets.unsqueeze(-1) + torch.arange(size, dtype=torch.int64) * stride
    if t.data_ptr() % 16 or offsets.numel() == 0:
        return False
    block = torch.arange(t.numel(), dtype=torch.int64) + int(offsets.min())
    return any(torch.equal(o.flatten(), block) for o in (offsets, offsets.permute(0, 2, 3, 1)))


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


def check_case(op: str, shape: tuple[int, int, int, int], kind: str, residual_kind: str, dtype: torch.dtype,
               seed: int, device: torch.device) -> bool:
    """Check one case (module doc); returns whether the kernels ran. Raises ``AssertionError`` on a mismatch."""
    n, c = shape[:2]
    if op == "module":
        return check_module(shape, kind, dtype, seed, device)
    base, view = laid_out(kind, shape, dtype, device, seed)
    has_r = op in ("apply_residual", "apply_residual_relu", "add_relu")
    rkind = kind if residual_kind == "same" else residual_kind
    rbase, rview = laid_out(rkind, shape, dtype, device, seed + 1) if has_r else (None, None)
    sbase = torch.rand((n, c, 1, 1), generator=torch.Generator().manual_seed(seed + 2)).to(device, dtype)
    relu = op in ("apply_residual_relu", "add_relu")
    scaled = op not in ("add_relu", "squeeze")
    leaves = [t for t in (base, sbase if scaled else None, rbase) if t is not None]

    def run(ts, fused: bool):
        ts = [t.detach().clone().requires_grad_(True) for t in ts]
        u = view(ts[0])
        s = ts[1] if scaled else None
        r = rview(ts[-1]) if has_r else None
        with fused_se._kernels().recording() as launches:
            if op == "squeeze":
                y = fused_se.squeeze_mean(u) if fused else u.mean((2, 3), keepdim=True)
            elif op == "add_relu":
                y = fused_se.add_relu(u, r) if fused else torch.relu(u + r)
            elif fused:
                y = fused_se.se_apply(u, s, r, relu=relu)
            else:
                y = u * s
                y = y + r if r is not None else y
                y = torch.relu(y) if relu else y
            g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed + 3)).to(device, dtype)
            grads = torch.autograd.grad(y, ts, g)
        return y, grads, launches, ts, g

    y, grads, launches, ts, g = run(leaves, fused=True)
    taken = bool(launches)
    u = view(ts[0])
    rt = rview(ts[-1]) if has_r else None
    assert taken == fused_se.admissible(u, rt, s=ts[1] if scaled else None), "the rule decides, nothing else"
    if taken:  # only what the kernels' addressing is written for
        assert fills_one_block(u) and (rt is None or fills_one_block(rt) and rt.stride() == u.stride()), \
            f"{kind}/{rkind} {tuple(u.shape)} strides {u.stride()} reached the kernels"
    if not taken:  # the PyTorch composition, bit for bit
        y_ref, g_ref, _, _, _ = run(leaves, fused=False)
        assert torch.equal(y, y_ref)
        for a, b in zip(grads, g_ref):
            assert torch.equal(a, b)
        return False
    for plan in launches:
        fused_se._kernels().check_bounds(plan)
    # float64 truth from the same rounded inputs; the ReLU's mask is the fused output's own sign.
    t64 = [t.detach().double().requires_grad_(True) for t in leaves]
    u64, r64 = view(t64[0]), rview(t64[-1]) if has_r else None
    s64 = t64[1] if scaled else None
    eps = EPS[dtype]
    tiny = torch.finfo(dtype).tiny  # below the smallest normal, rounding is absolute
    if op == "squeeze":
        y64 = u64.mean((2, 3), keepdim=True)
        tol = 4 * eps * u64.detach().abs().mean((2, 3), keepdim=True) + tiny
    else:
        lin = u64 * s64 if scaled else u64
        lin = lin + r64 if has_r else lin
        mag = (u64 * s64 if scaled else u64).detach().abs() + (r64.detach().abs() if has_r else 0)
        y64 = lin * ((y > 0) | y.isnan()).double() if relu else lin
        tol = 4 * eps * mag + tiny
    assert y.dtype == dtype and y.shape == y64.shape
    assert ((y.double() - y64).abs() <= tol).all(), f"forward off by {(y.double() - y64).abs().max()}"
    g64 = torch.autograd.grad(y64, t64, g.double())
    for name, a, b, t in zip(("u", "s", "r") if scaled else ("u", "r"), grads, g64, t64):
        # Elementwise gradients are one rounding from the truth; grad_s sums H x W products, so its
        # error scales with the sum of their magnitudes.
        assert a.dtype == dtype
        scale = b.abs() + _sum_scale(name, u64, g, y, relu)
        assert ((a.double() - b).abs() <= 4 * eps * scale + tiny).all(), \
            f"grad {name} off by {(a.double() - b).abs().max()}"
    return True


def _sum_scale(name: str, u64: torch.Tensor, g: torch.Tensor, y: torch.Tensor, relu: bool) -> torch.Tensor | float:
    """The magnitude a gradient's rounding error scales with: for grad_s, the sum over H x W of
    |g' u| (its terms); for the elementwise gradients, their own size (already in |b|)."""
    if name != "s":
        return 0.0
    gp = g.double().abs() * (((y > 0) | y.isnan()).double() if relu else 1.0)
    return (gp * u64.detach().abs()).sum((2, 3), keepdim=True)


def check_module(shape: tuple[int, int, int, int], kind: str, dtype: torch.dtype, seed: int,
                 device: torch.device) -> bool:
    """SqueezeExcite(fused=True) (squeeze, excitation, apply, and the linked backward that writes
    grad_u once) against the same block unfused, both measured against float64."""
    n, c = shape[:2]
    torch.manual_seed(seed)
    ref = SqueezeExcite(c, 4 if c >= 4 else 1).to(device, dtype)
    fused = copy.deepcopy(ref)
    fused.fused = True
    truth = copy.deepcopy(ref).double()
    base, view = laid_out(kind, shape, dtype, device, seed)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 3)).to(device, dtype)
    out = {}
    for key, m in (("fused", fused), ("reference", ref), ("float64", truth)):
        b = (base.double() if key == "float64" else base).detach().clone().requires_grad_(True)
        with fused_se._kernels().recording() as launches:
            y = m(view(b))
            grads = torch.autograd.grad(y, [b, *m.parameters()], g.to(y.dtype))
        out[key] = (y, grads, launches)
    taken = bool(out["fused"][2])
    assert taken == fused_se.admissible(view(base), s=view(base)[:, :, :1, :1].reshape(n, c))
    if taken:
        assert fills_one_block(view(base)), f"{kind} {shape} reached the kernels"
    if not taken:
        assert torch.equal(out["fused"][0], out["reference"][0])
        for a, b in zip(out["fused"][1], out["reference"][1]):
            assert torch.equal(a, b)
        return False
    eps = EPS[dtype]
    for i, (f, r, t) in enumerate(zip([out["fused"][0], *out["fused"][1]], [out["reference"][0], *out["reference"][1]],
                                      [out["float64"][0], *out["float64"][1]])):
        scale = t.abs().max().item() + 1e-12
        err_f = (f.double() - t).abs().max().item()
        err_r = (r.double() - t).abs().max().item()
        assert err_f <= 2 * err_r + 8 * eps * scale + torch.finfo(dtype).tiny, (i, err_f, err_r, scale)
    return True


def matrix(shapes: tuple[tuple[int, int, int, int], ...] = ((2, 16, 4, 4), (1, 48, 3, 16), (3, 17, 5, 5)),
           ) -> Iterator[tuple[str, tuple[int, int, int, int], str, str, torch.dtype, int]]:
    """A fixed set of cases: every op, layout and dtype on ``shapes``, shortcuts in the input's own
    layout and in channels_last (the arguments of :func:`check_case` but the device)."""
    for seed, (op, shape, kind, rkind, dtype) in enumerate(itertools.product(
            OPS, shapes, LAYOUTS, ("same", "channels_last"), KERNEL_DTYPES)):
        if rkind != "same" and op not in ("apply_residual", "apply_residual_relu", "add_relu"):
            continue
        yield op, shape, kind, rkind, dtype, seed
