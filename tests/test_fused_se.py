"""The fused SE operator against the reference PyTorch composition.

Without CUDA the Triton kernels run on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``,
set here before Triton is first imported); with CUDA they run on the device. Tolerances per dtype:
fp32 1e-5 relative / 1e-5 absolute (sums are reordered), bf16 and fp16 compare to the reference
computed in fp32 from the same rounded inputs within 2 ulps of the output dtype (2**-7 for bf16,
2**-10 for fp16, relative) plus a small absolute term.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton`
pytest.importorskip("triton")

from senet import create_model  # noqa: E402
from senet.layers import SqueezeExcite, set_fused  # noqa: E402
from senet.layers import fused_se  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2 * 2**-7, 2e-2), torch.float16: (2 * 2**-10, 2e-3)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="CPU run without TRITON_INTERPRET=1 (triton was imported before this module set it)",
)


def make(shape, dtype, channels_last, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g).to(DEVICE, dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(requires_grad)


def close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol)


def reference(u, s, shortcut, relu):
    """fp32 reference of act(u * s + shortcut) from the same (possibly rounded) inputs."""
    y = u.float() * s.float()
    if shortcut is not None:
        y = y + shortcut.float()
    return torch.relu(y) if relu else y


# Odd sizes: H*W = 35 and 5 (not multiples of any block), C = 24 and 5 (not powers of 2).
SHAPES = [(2, 24, 5, 7), (3, 5, 1, 5)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_squeeze_matches_mean(shape, channels_last, dtype):
    u = make(shape, dtype, channels_last)
    z = fused_se.squeeze_mean(u)
    assert z.shape == (shape[0], shape[1], 1, 1) and z.dtype == dtype
    close(z, u.float().mean((2, 3), keepdim=True), dtype)
    gz = make(z.shape, dtype, False, seed=1, requires_grad=False)
    (gu,) = torch.autograd.grad(z, u, gz)
    close(gu, (gz.float() / (shape[2] * shape[3])).expand(shape), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("relu", [True, False], ids=["relu", "linear"])
@pytest.mark.parametrize("with_shortcut", [True, False], ids=["shortcut", "alone"])
def test_apply_forward_and_gradients(with_shortcut, relu, channels_last, dtype):
    shape = SHAPES[0]
    u = make(shape, dtype, channels_last, seed=0)
    s = torch.sigmoid(make((shape[0], shape[1], 1, 1), torch.float32, False, seed=1, requires_grad=False))
    s = s.to(dtype).requires_grad_(True)
    r = make(shape, dtype, channels_last, seed=2) if with_shortcut else None
    y = fused_se.se_apply(u, s, r, relu=relu)
    assert y.dtype == dtype and y.shape == u.shape
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    close(y, reference(u, s, r, relu), dtype)

    g = make(shape, dtype, channels_last, seed=3, requires_grad=False)
    inputs = (u, s) + ((r,) if r is not None else ())
    got = torch.autograd.grad(y, inputs, g)
    # Reference gradients in fp32 from the same inputs.
    ref_in = [t.detach().float().requires_grad_(True) for t in inputs]
    y_ref = reference(ref_in[0], ref_in[1], ref_in[2] if r is not None else None, relu)
    want = torch.autograd.grad(y_ref, ref_in, g.float())
    for a, b in zip(got, want):
        assert a.shape == b.shape
        # grad_s sums over H*W products: allow for that many roundings of the inputs.
        close(a, b, dtype)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_add_relu_matches_reference(channels_last):
    u = make((2, 6, 3, 5), torch.float32, channels_last, seed=0)
    r = make((2, 6, 3, 5), torch.float32, channels_last, seed=1)
    y = fused_se.add_relu(u, r)
    close(y, torch.relu(u + r), torch.float32)
    g = make(y.shape, torch.float32, False, seed=2, requires_grad=False)
    gu, gr = torch.autograd.grad(y, (u, r), g)
    ref = g * (u + r > 0)
    close(gu, ref, torch.float32)
    close(gr, ref, torch.float32)


def test_grad_s_sums_many_positions_in_fp32():
    """A reduction over more positions than one block, with the HW split across programs."""
    shape = (1, 3, 40, 40)  # 1600 positions, more than one HW block and split over chunks
    u = make(shape, torch.float32, True)
    s = torch.full((1, 3, 1, 1), 0.5, device=DEVICE, requires_grad=True)
    y = fused_se.se_apply(u, s)
    (gs,) = torch.autograd.grad(y, s, torch.ones_like(y))
    close(gs, u.detach().sum((2, 3), keepdim=True), torch.float32)
    close(fused_se.squeeze_mean(u), u.mean((2, 3), keepdim=True), torch.float32)


def test_se_module_fused_scaling_matches_reference():
    torch.manual_seed(0)
    se = SqueezeExcite(12, 4).to(DEVICE)
    x = make((2, 12, 3, 3), torch.float32, True)
    ref_out = se(x)
    ref_grads = torch.autograd.grad(ref_out.sum() + (ref_out**2).sum(), [x, *se.parameters()])
    set_fused(se, True)
    out = se(x)
    grads = torch.autograd.grad(out.sum() + (out**2).sum(), [x, *se.parameters()])
    close(out, ref_out, torch.float32)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


TINY = {
    "se_resnet20": dict(layers=(1, 1, 1)),
    "se_preact_resnet110": dict(layers=(1, 1, 1)),
    "se_resnext50_32x4d": dict(layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), groups=2, base_width=64),
}


@pytest.mark.parametrize("name,channels_last", [("se_resnet20", False), ("se_preact_resnet110", True),
                                                ("se_resnext50_32x4d", True)])
def test_whole_network_fused_equals_reference(name, channels_last):
    """A tiny SE-ResNet forced onto the fused path gives the reference logits and gradients."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, fused=False, **TINY[name]).to(DEVICE).train()
    fused = create_model(name, num_classes=5, fused=True, **TINY[name]).to(DEVICE).train()
    fused.load_state_dict(model.state_dict())
    x = make((2, 3, 8, 8) if "50" not in name else (2, 3, 32, 32), torch.float32, channels_last,
             requires_grad=False)
    if channels_last:
        model, fused = model.to(memory_format=torch.channels_last), fused.to(memory_format=torch.channels_last)
    calls = []
    orig = fused_se._Apply.apply
    fused_se._Apply.apply = lambda *a: calls.append(1) or orig(*a)  # count real fused calls
    try:
        out_f = fused(x)
        out_f.square().mean().backward()
    finally:
        fused_se._Apply.apply = orig
    out_r = model(x)
    out_r.square().mean().backward()
    assert len(calls) >= 3  # one per unit at least
    torch.testing.assert_close(out_f, out_r, rtol=1e-4, atol=1e-5)
    for (n, pf), (_, pr) in zip(fused.named_parameters(), model.named_parameters()):
        torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-3, atol=1e-5, msg=n)


def test_plain_twin_uses_fused_add_relu_and_matches():
    torch.manual_seed(0)
    ref = create_model("se_resnet20", layers=(1, 1, 1), se=None, fused=False).eval()
    fus = create_model("se_resnet20", layers=(1, 1, 1), se=None, fused=True).eval()
    fus.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 8, 8)
    ref, fus = ref.to(DEVICE), fus.to(DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(fus(x.to(DEVICE)), ref(x.to(DEVICE)), rtol=1e-4, atol=1e-5)


def test_dispatch_rules():
    x = torch.zeros(1, 2, 3, 3)
    assert not fused_se.use_fused(False, x)
    assert not fused_se.use_fused(None, x)  # auto: CUDA only
    if DEVICE.type == "cpu":
        assert fused_se.use_fused(True, x)  # forced, under the interpreter
    os.environ[fused_se.FUSED_ENV] = "0"
    try:
        assert not fused_se.use_fused(True, x.to(DEVICE))
    finally:
        del os.environ[fused_se.FUSED_ENV]
    with pytest.raises(TypeError, match="enabled"):
        set_fused(torch.nn.Identity(), "yes")  # type: ignore[arg-type]


def test_tracing_uses_reference_composition():
    """Export (jit.trace, ONNX) sees the reference ops: no Triton call in the traced graph."""
    model = create_model("se_resnet20", layers=(1, 1, 1), num_classes=5, fused=True).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-5)
    assert "prim::PythonOp" not in str(traced.inlined_graph)


def test_fused_flag_keeps_state_dict_and_registry_validates():
    a = create_model("se_resnet20", fused=False)
    b = create_model("se_resnet20")
    assert list(a.state_dict()) == list(b.state_dict())
    with pytest.raises(TypeError):
        create_model("se_resnet20", fused="on")


def test_torch_compile_runs_reference_composition():
    """Under torch.compile the model compiles (no graph break into Triton) and matches eager."""
    torch.manual_seed(0)
    model = create_model("se_resnet20", layers=(1, 1, 1), num_classes=5, fused=True).to(DEVICE)
    x = torch.randn(2, 3, 8, 8, device=DEVICE)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)


def test_forward_hooks_on_se_still_fire():
    """Analysis tools hook SE blocks: a hooked block takes the reference path, so its hook runs."""
    model = create_model("se_resnet20", layers=(1, 1, 1), num_classes=5, fused=True).to(DEVICE)
    seen = []
    model.layer1[0].se.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    gate_seen = []
    model.layer2[0].se.gate.register_forward_hook(lambda m, a, out: gate_seen.append(out.shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8, device=DEVICE))
    assert seen == [(2, 16, 8, 8)] and gate_seen == [(2, 32, 1, 1)]  # the gate runs on the fused path too
