"""The bounds proof of the fused SE kernels (:func:`senet.layers._triton_se.check_bounds`).

For every launch plan the dispatch makes, each program's lowest and highest element in each tensor
it reads or writes lies inside that tensor and its storage, and no 32-bit offset overflows. The
plans come from meta tensors (nothing is allocated or run): every unit shape of SE-ResNet-50 and
SE-ResNeXt-50 at batch 1 to 256 (the compile test's specialisations among them), shapes past 2**31
elements, and generated shapes. A second test ties the proof to the kernels themselves: run in
Triton's interpreter on tensors that sit inside NaN-filled guard storage, they write exactly the
elements the footprints name and read none of the guard.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fused_cases import dispatched, unit_shapes  # noqa: E402
from senet.layers import _triton_se as K  # noqa: E402

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def all_plans(shapes, dtypes=DTYPES, layouts=(False, True)) -> list[K.Launch]:
    return [p for shape in shapes for dt in dtypes for cl in layouts for train in (False, True)
            for se in (True, False) for p in dispatched(shape, dt, cl, train, se)]


def test_every_resnet50_plan_stays_inside_its_tensors():
    """SE-ResNet-50's units at the compile test's batch (128), training and inference, SE and plain."""
    plans = all_plans(unit_shapes("se_resnet50"), dtypes=(torch.bfloat16,))
    assert {p.name for p in plans} == {"_squeeze_kernel", "_finish_kernel", "_apply_kernel",
                                       "_backward_kernel", "_grad_u_kernel"}
    for p in plans:
        K.check_bounds(p)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 2, 7, 128, 256])
@pytest.mark.parametrize("name", ["se_resnet50", "se_resnext50_32x4d"])
def test_every_plan_of_both_models_stays_inside_its_tensors(name, batch):
    for p in all_plans(unit_shapes(name, batch=batch)):
        K.check_bounds(p)


@pytest.mark.parametrize("shape,channels_last,train", [
    ((9, 2048, 512, 256), True, False),
    pytest.param((9, 2048, 512, 256), False, True, marks=pytest.mark.slow),
    pytest.param((2731, 256, 56, 56), True, True, marks=pytest.mark.slow),
    pytest.param((2731, 256, 56, 56), False, True, marks=pytest.mark.slow),
], ids=str)
def test_past_two_to_the_31_elements(shape, channels_last, train):
    """Tensors of 2**31 and more elements (under 2**31 per sample, the kernels' limit): the 64-bit
    sample offset keeps every access inside, and no 32-bit offset overflows."""
    assert torch.Size(shape).numel() >= 2**31
    plans = dispatched(shape, torch.bfloat16, channels_last, train, True)
    assert plans
    for p in plans:
        K.check_bounds(p)


def test_the_proof_catches_a_plan_that_runs_past_its_tensor():
    """A grid one program too long, a stride that is not the tensor's, and an offset past 2**31 are
    each reported (so the passing tests above can fail)."""
    u = torch.empty((2, 32, 4, 4), device="meta")
    s = torch.empty((2, 32), device="meta")
    good = K.plan_apply(u, s, None, u, relu=False)
    K.check_bounds(good)
    longer = K.Launch(good.kernel, (good.grid[0] + 1,), good.args, good.constexprs)
    with pytest.raises(AssertionError, match="_apply_kernel .* outside the tensor"):
        K.check_bounds(longer)
    args = list(good.args)
    args[-1] = 2 * args[-1]  # s_hw doubled: walks past the end of each sample
    with pytest.raises(AssertionError, match="outside the tensor"):
        K.check_bounds(K.Launch(good.kernel, good.grid, tuple(args), good.constexprs))
    big = torch.empty((1, 2**15, 2**8, 2**8 - 1), device="meta").contiguous(memory_format=torch.channels_last)
    args = list(K.plan_apply(big, None, None, big, relu=True).args)
    args[-2] = 2**17  # a channel stride whose offsets pass 2**31 inside one sample
    with pytest.raises(AssertionError, match="32-bit offset|outside"):
        K.check_bounds(K.Launch(K._apply_kernel, K.plan_apply(big, None, None, big, relu=True).grid,
                                tuple(args), K.plan_apply(big, None, None, big, relu=True).constexprs))


def test_plans_refuse_tensors_outside_the_layout_rule():
    """The plans' own precondition: a channel slice handed to a plan directly is refused before any launch."""
    wide = torch.empty((3, 32, 4, 4), device="meta")
    u = wide[:, :16]
    s = torch.empty((3, 16), device="meta")
    with pytest.raises(RuntimeError, match="not dense"):
        K.plan_apply(u, s, None, torch.empty((3, 16, 4, 4), device="meta"), relu=True)
    dense = torch.empty((3, 16, 4, 4), device="meta")
    with pytest.raises(RuntimeError, match="does not share the layout"):
        K.plan_apply(dense, s, dense.contiguous(memory_format=torch.channels_last), dense, relu=True)


shapes = st.tuples(st.integers(1, 300), st.integers(1, 2100), st.integers(1, 60), st.integers(1, 60))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(shape=shapes, dtype=st.sampled_from(DTYPES), channels_last=st.booleans(), train=st.booleans(),
       se=st.booleans())
def test_generated_shapes_stay_inside_their_tensors(shape, dtype, channels_last, train, se):
    """Any shape, including 1x1, odd H x W, channels no multiple of a tile, batch 1 (the launches
    the dispatch plans, where it plans any)."""
    for p in dispatched(shape, dtype, channels_last, train, se):
        K.check_bounds(p)


def _guarded(shape, channels_last, pad, seed):
    """A dense tensor of ``shape`` at an offset of ``pad`` elements inside NaN-filled storage that
    extends ``pad`` elements past it, and the storage itself."""
    n, c, h, w = shape
    numel = n * c * h * w
    store = torch.full((numel + 2 * pad,), float("nan"))
    perm = (0, 2, 3, 1) if channels_last else (0, 1, 2, 3)
    dims = [shape[i] for i in perm]
    view = store[pad:pad + numel].view(dims).permute(*[perm.index(i) for i in range(4)])
    g = torch.Generator().manual_seed(seed)
    view.copy_(torch.randn(shape, generator=g))
    return view, store


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check (CPU tensors)")
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(2, 48, 6, 8), (1, 16, 40, 40), (3, 32, 1, 16)], ids=str)
def test_footprints_match_what_the_kernels_touch(shape, channels_last):
    """The proof's restatement of the kernels' addressing against the interpreted kernels: outputs
    written exactly where the footprints say, and inputs in NaN guard storage read only inside."""
    pad = 64  # a multiple of 16 elements: the tensors stay 16-byte aligned
    u, u_store = _guarded(shape, channels_last, pad, 0)
    r, _ = _guarded(shape, channels_last, pad, 1)
    g, _ = _guarded(shape, channels_last, pad, 2)
    n, c = shape[:2]
    s = torch.rand(n, c)
    y, y_store = _guarded(shape, channels_last, pad, 3)
    y_store.fill_(float("nan"))
    gp, gp_store = _guarded(shape, channels_last, pad, 4)
    gp_store.fill_(float("nan"))
    gu, gu_store = _guarded(shape, channels_last, pad, 5)
    gu_store.fill_(float("nan"))
    plans = [K.plan_apply(u, s, r, y, relu=False)]
    _, _, gs, part = K.backward_buffers(g, s, True, True)
    plans += K.plan_backward(g, None, u, s, gp, gu, gs, part)
    z, zpart = K.squeeze_buffers(u)
    plans += K.plan_squeeze(u, z, zpart)
    for plan in plans:
        K.run(plan)
        K.check_bounds(plan)
    for out, store in ((y, y_store), (gp, gp_store), (gu, gu_store)):
        # Every element of the output written, nothing of the guard: the writes' footprint exactly.
        assert not out.isnan().any()
        assert store[:pad].isnan().all() and store[-pad:].isnan().all()
    # No NaN of an input's guard reached an output: nothing outside an input was read.
    for t in (y, gp, gu, gs, z):
        assert not t.isnan().any()
    torch.testing.assert_close(y, u * s[:, :, None, None] + r)
    torch.testing.assert_close(gs, (g * u).sum((2, 3)), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(z, u.mean((2, 3)), rtol=1e-5, atol=1e-6)
