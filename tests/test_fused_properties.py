"""Property tests of every fused SE op against a float64 reference, over generated shapes, layouts
and dtypes (hypothesis): the fused path either matches the reference within the dtype's tolerance,
forward and backward, or is not taken, and then the result is the PyTorch composition's, bit for bit.

Shapes include 1x1, odd H x W, channels no multiple of any tile and batch 1; layouts include
contiguous, channels_last, channel slices, batch slices, expanded and transposed views, storage
offsets and misaligned addresses (:mod:`senet.layers.fused_check`, which also serves the benchmark's
correctness phase). Only dense, aligned layouts may be taken.
The default tier draws a bounded, derandomized set of examples; the slow tier draws many more.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
pytest.importorskip("hypothesis")
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from senet.layers import fused_se  # noqa: E402
from senet.layers.fused_check import KERNEL_DTYPES, LAYOUTS, OPS, check_case, laid_out  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPES = list(KERNEL_DTYPES)

cases = dict(
    op=st.sampled_from(OPS),
    shape=st.tuples(st.integers(1, 4), st.sampled_from([1, 3, 16, 17, 24, 32, 48]),
                    st.sampled_from([1, 2, 3, 4, 5, 8]), st.sampled_from([1, 2, 4, 5, 8, 16])),
    kind=st.sampled_from(LAYOUTS),
    residual_kind=st.sampled_from(("same",) + LAYOUTS),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(**cases)
# The channel slice of the reproduction in docs/performance.md (it aborted the process before the
# layout rule): SqueezeExcite(16, 4), fused, on randn(3, 32, 4, 4)[:, :16].
@example(op="module", shape=(3, 16, 4, 4), kind="channel_slice", residual_kind="same", dtype=torch.float32, seed=0)
@example(op="apply_residual_relu", shape=(3, 16, 4, 4), kind="channel_slice", residual_kind="same",
         dtype=torch.float32, seed=0)
@example(op="apply_residual_relu", shape=(2, 16, 4, 4), kind="batch_slice", residual_kind="contiguous",
         dtype=torch.bfloat16, seed=1)
def test_fused_ops_match_float64_or_are_not_taken(op, shape, kind, residual_kind, dtype, seed):
    check_case(op, shape, kind, residual_kind, dtype, seed, DEVICE)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(**cases)
def test_fused_ops_match_float64_or_are_not_taken_many(op, shape, kind, residual_kind, dtype, seed):
    check_case(op, shape, kind, residual_kind, dtype, seed, DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("kind,shape", [("contiguous", (2, 16, 4, 4)), ("channels_last", (1, 48, 3, 5)),
                                        ("batch_slice", (2, 16, 2, 8)), ("storage_offset", (3, 32, 1, 16))])
def test_dense_aligned_layouts_are_taken(kind, shape, op, dtype):
    """The rule is not 'never': each op on each dense, aligned layout the kernels vectorise runs
    the kernels and matches float64."""
    base, view = laid_out(kind, shape, dtype, DEVICE, 0)
    s = torch.rand(shape[0], shape[1], dtype=dtype, device=DEVICE)
    assert fused_se.admissible(view(base), view(base), s=s)
    assert check_case(op, shape, kind, "same", dtype, 0, DEVICE), f"{op} on {kind} took the reference path"
