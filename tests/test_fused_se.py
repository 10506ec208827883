"""The fused SE operator against the reference PyTorch composition.

Without CUDA the Triton kernels run on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``,
set here before Triton is first imported); with CUDA they run on the device. Tolerances per dtype:
fp32 1e-5 relative / 1e-5 absolute (sums are reordered), bf16 and fp16 compare to the reference
computed in fp32 from the same rounded inputs within 2 ulps of the output dtype (2**-7 for bf16,
2**-10 for fp16, relative) plus a small absolute term.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first `import triton`
pytest.importorskip("triton")

from senet import create_model  # noqa: E402
from senet.layers import SqueezeExcite, set_fused  # noqa: E402
from senet.layers import _triton_se as K  # noqa: E402
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


# Sizes the kernels vectorise (the contiguous axis a multiple of 16) but no multiple of the blocks:
# H*W = 48 and C = 48 leave partial tiles along both axes.
SHAPES = [(2, 48, 6, 8), (3, 16, 4, 4)]
# Sizes they would not (H*W = 35 in NCHW, C = 24 in channels_last): the PyTorch composition runs.
ODD = (2, 24, 5, 7)


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
    u = make((2, 16, 3, 16), torch.float32, channels_last, seed=0)
    r = make((2, 16, 3, 16), torch.float32, channels_last, seed=1)
    y = fused_se.add_relu(u, r)
    close(y, torch.relu(u + r), torch.float32)
    g = make(y.shape, torch.float32, False, seed=2, requires_grad=False)
    gu, gr = torch.autograd.grad(y, (u, r), g)
    ref = g * (u + r > 0)
    close(gu, ref, torch.float32)
    close(gr, ref, torch.float32)


def test_grad_s_sums_many_positions_in_fp32():
    """A reduction over more positions than one block, with the HW split across programs."""
    shape = (1, 16, 40, 40)  # 1600 positions, more than one HW block and split over chunks
    u = make(shape, torch.float32, True)
    s = torch.full((1, 16, 1, 1), 0.5, device=DEVICE, requires_grad=True)
    y = fused_se.se_apply(u, s)
    (gs,) = torch.autograd.grad(y, s, torch.ones_like(y))
    close(gs, u.detach().sum((2, 3), keepdim=True), torch.float32)
    close(fused_se.squeeze_mean(u), u.mean((2, 3), keepdim=True), torch.float32)


def test_se_module_fused_scaling_matches_reference():
    torch.manual_seed(0)
    se = SqueezeExcite(32, 4).to(DEVICE)
    x = make((2, 32, 3, 3), torch.float32, True)
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


def count_launches(monkeypatch) -> list[str]:
    """Record the name of every kernel the fused path launches (they still run)."""
    names: list[str] = []
    real = K.launch
    monkeypatch.setattr(K, "launch", lambda plan: names.append(plan.name) or real(plan))
    return names


@pytest.mark.parametrize("name,channels_last", [("se_resnet20", False), ("se_preact_resnet110", True),
                                                ("se_resnext50_32x4d", True)])
def test_whole_network_fused_and_reference_match_float64(name, channels_last, monkeypatch):
    """A tiny SE-ResNet on the fused path and on the reference path both give the logits and
    gradients of the same network in float64 (so the check holds at any thread count: the fp32
    reference is itself only an approximation of that truth)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, fused=False, **TINY[name]).to(DEVICE).train()
    fused = create_model(name, num_classes=5, fused=True, **TINY[name]).to(DEVICE).train()
    fused.load_state_dict(model.state_dict())
    truth = copy.deepcopy(model).double()
    x = make((2, 3, 16, 16) if "50" not in name else (2, 3, 32, 32), torch.float64, channels_last,
             requires_grad=False)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    launches = count_launches(monkeypatch)
    outs = {}
    for key, m in (("fused", fused), ("reference", model), ("float64", truth)):
        m.to(memory_format=fmt)
        if key == "reference":
            monkeypatch.undo()  # count the fused model's launches only
        outs[key] = m(x.to(next(m.parameters()).dtype))
        outs[key].square().mean().backward()
    units = sum(1 for mod in fused.modules() if isinstance(mod, SqueezeExcite))
    assert launches.count("_apply_kernel") == units  # every unit took the fused path
    assert launches.count("_grad_u_kernel") == units  # and wrote grad_u in the squeeze's backward
    for key in ("fused", "reference"):
        torch.testing.assert_close(outs[key].double(), outs["float64"], rtol=1e-3, atol=1e-4, msg=key)
    for (n, p64), pf, pr in zip(truth.named_parameters(), fused.parameters(), model.parameters()):
        # Batch-2 BatchNorm over few positions makes this net ill-conditioned: fp32 lands about
        # 1e-3 of the largest gradient from float64 either way, with the error depending on the
        # thread count. Both paths must be that close, and the fused one no further than eager.
        scale = p64.grad.abs().max().item()
        err = {key: (p.grad.double() - p64.grad).abs().max().item() for key, p in (("fused", pf), ("reference", pr))}
        assert err["reference"] <= 5e-3 * scale + 1e-7, (n, err, scale)
        assert err["fused"] <= 2 * err["reference"] + 2e-4 * scale + 1e-7, (n, err, scale)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_se_unit_launches_four_kernels_per_training_step(channels_last, monkeypatch):
    """One SE unit's tail, forward and backward, is four launches: squeeze, apply, the backward
    pass and grad_u (the squeeze's gradient included: no broadcast add left to autograd)."""
    torch.manual_seed(0)
    se = set_fused(SqueezeExcite(32, 4), True).to(DEVICE)
    u = make((2, 32, 4, 4), torch.float32, channels_last)  # one HW block: no split reduction
    r = make((2, 32, 4, 4), torch.float32, channels_last, seed=1)
    launches = count_launches(monkeypatch)
    y = fused_se.se_apply(u, se.scale(u), r, relu=True)
    assert launches == ["_squeeze_kernel", "_apply_kernel"]
    g = make(y.shape, torch.float32, channels_last, seed=2, requires_grad=False)
    gu, gr, *gw = torch.autograd.grad(y, [u, r, *se.parameters()], g)
    assert launches[2:] == ["_backward_kernel", "_grad_u_kernel"]
    monkeypatch.undo()
    ref = torch.relu(u * set_fused(se, False).scale(u) + r)
    want = torch.autograd.grad(ref, [u, r, *se.parameters()], g)
    for a, b in zip([gu, gr, *gw], want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_split_reductions_add_one_launch_each(monkeypatch):
    """A reduction split over HW chunks (few programs, many positions) adds one summing kernel."""
    se = set_fused(SqueezeExcite(16, 4), True).to(DEVICE)
    u = make((1, 16, 40, 40), torch.float32, True)
    launches = count_launches(monkeypatch)
    y = fused_se.se_apply(u, se.scale(u))
    torch.autograd.grad(y, u, torch.ones_like(y))
    assert launches == ["_squeeze_kernel", "_finish_kernel", "_apply_kernel", "_backward_kernel",
                        "_finish_kernel", "_grad_u_kernel"]


def test_plain_unit_launches_one_kernel_each_way(monkeypatch):
    u = make((2, 16, 4, 4), torch.float32, True)
    r = make((2, 16, 4, 4), torch.float32, True, seed=1)
    launches = count_launches(monkeypatch)
    y = fused_se.add_relu(u, r)
    torch.autograd.grad(y, [u, r], torch.ones_like(y))
    assert launches == ["_apply_kernel", "_backward_kernel"]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_layouts_the_kernels_would_not_vectorise_take_pytorch(channels_last, monkeypatch):
    """H*W = 35 (NCHW) and C = 24 (channels_last) compile to scalar accesses: not dispatched."""
    u = make(ODD, torch.float32, channels_last)
    s = torch.rand(ODD[0], ODD[1], 1, 1, requires_grad=True)
    r = make(ODD, torch.float32, channels_last, seed=1)
    assert not fused_se.use_fused(True, u)
    launches = count_launches(monkeypatch)
    torch.testing.assert_close(fused_se.se_apply(u, s, r, relu=True), torch.relu(u * s + r))
    torch.testing.assert_close(fused_se.squeeze_mean(u), u.mean((2, 3), keepdim=True))
    assert launches == []


def test_nan_propagates_as_in_pytorch():
    """NaN in the input reaches the output and the gradients exactly where PyTorch's ops put it
    (a ReLU mask written as ``where(y > 0, g, 0)`` would zero the gradient at NaN)."""
    shape = (2, 16, 4, 4)
    u = make(shape, torch.float32, True, requires_grad=False)
    u[0, 3, 1, 2] = float("nan")
    u[1, 5] = float("nan")
    u.requires_grad_(True)
    s = torch.rand(2, 16, 1, 1, device=DEVICE, requires_grad=True)
    r = make(shape, torch.float32, True, seed=1)
    g = make(shape, torch.float32, True, seed=2, requires_grad=False)
    g[1, 7, 0, 0] = float("nan")  # a NaN gradient where the ReLU may be closed
    got = fused_se.se_apply(u, s, r, relu=True)
    want = torch.relu(u * s + r)
    torch.testing.assert_close(got, want, equal_nan=True)
    for a, b in zip(torch.autograd.grad(got, [u, s, r], g), torch.autograd.grad(want, [u, s, r], g)):
        assert torch.equal(a.isnan(), b.isnan())
        torch.testing.assert_close(a, b, equal_nan=True)


def test_size_grid_and_device_guards(monkeypatch):
    big = torch.empty((1, 2**15, 2**8, 2**8), device="meta")  # 2**31 elements in one sample
    with pytest.raises(ValueError, match="2\\*\\*31"):
        K.plan_apply(big, None, None, big, relu=True)
    with pytest.raises(ValueError, match="65535"):
        K._check_grid((8, 70_000))
    # Launches go to the tensor's device, not the current one.
    assert isinstance(K.device_of(torch.device("cuda", 1)), torch.cuda.device)
    assert K.device_of(torch.device("cuda", 1)).idx == 1
    seen = []
    real = K.device_of
    monkeypatch.setattr(K, "device_of", lambda d: seen.append(d) or real(d))
    fused_se.add_relu(make((1, 16, 4, 4), torch.float32, True), make((1, 16, 4, 4), torch.float32, True))
    assert seen == [DEVICE]


def test_plain_twin_uses_fused_add_relu_and_matches():
    torch.manual_seed(0)
    ref = create_model("se_resnet20", layers=(1, 1, 1), se=None, fused=False).eval()
    fus = create_model("se_resnet20", layers=(1, 1, 1), se=None, fused=True).eval()
    fus.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 8, 8)
    ref, fus = ref.to(DEVICE), fus.to(DEVICE)
    with torch.no_grad():
        torch.testing.assert_close(fus(x.to(DEVICE)), ref(x.to(DEVICE)), rtol=1e-4, atol=1e-5)


def test_dispatch_rules(monkeypatch):
    x = torch.zeros(1, 16, 4, 4)
    assert not fused_se.use_fused(False, x)
    assert not fused_se.use_fused(None, x)  # the default: the reference composition
    if DEVICE.type == "cpu":
        assert fused_se.use_fused(True, x)  # forced, under the interpreter
    monkeypatch.setenv(fused_se.FUSED_ENV, "0")
    assert not fused_se.use_fused(True, x.to(DEVICE))
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


def test_torch_compile_runs_the_fused_operators(monkeypatch):
    """With the fused flag on, a model compiles in one graph (the fused tail is a custom operator
    Dynamo does not trace into), its kernels run, and it matches eager, gradients included."""
    torch.manual_seed(0)
    model = create_model("se_resnet20", layers=(1, 1, 1), num_classes=5, fused=True).to(DEVICE)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    launches = count_launches(monkeypatch)
    out = compiled(x)
    out.square().sum().backward()
    assert {"_squeeze_kernel", "_apply_kernel", "_backward_kernel"} <= set(launches)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.undo()
    eager = model(x)
    eager.square().sum().backward()
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
    for a, p in zip(grads, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("with_scale,relu", [(True, True), (True, False), (False, True)])
def test_custom_operators_pass_opcheck(with_scale, relu):
    """Schema, fake (meta) implementation and autograd registration of the operators torch.compile sees."""
    u = make((2, 16, 4, 4), torch.float32, True)
    s = torch.rand(2, 16, device=DEVICE, requires_grad=True) if with_scale else None
    r = make((2, 16, 4, 4), torch.float32, True, seed=1)
    torch.library.opcheck(torch.ops.senet.fused_se_apply.default, (u, s, r, relu))
    torch.library.opcheck(torch.ops.senet.fused_squeeze_mean.default, (u,))


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


def test_default_is_the_reference_composition_even_on_cuda(monkeypatch):
    """Until the kernels have run on a GPU, nothing takes them unless asked: with the device check
    saying CUDA, a model built with defaults launches nothing; se_fused=True (any family) or
    SqueezeExcite(fused=True) does."""
    monkeypatch.setattr(fused_se, "_kernel_device", lambda x: True)  # as on a CUDA machine
    x = make((2, 3, 16, 16), torch.float32, False, requires_grad=False)
    launches = count_launches(monkeypatch)
    default = create_model("se_resnet20", layers=(1, 1, 1), num_classes=5)
    default(x).sum().backward()
    assert launches == []
    opted = create_model("se_resnet20", layers=(1, 1, 1), num_classes=5, se_fused=True)
    opted(x).sum().backward()
    assert "_apply_kernel" in launches
    launches.clear()
    mobile = create_model("se_mobilenet_v1", num_classes=5, se_fused=True)  # a family without a fused kwarg
    assert all(m.fused is True for m in mobile.modules() if isinstance(m, SqueezeExcite))
    se = SqueezeExcite(16, 4, fused=True)
    se(make((2, 16, 4, 4), torch.float32, False))
    assert "_apply_kernel" in launches
    with pytest.raises(TypeError, match="se_fused"):
        create_model("se_resnet20", se_fused="yes")


@pytest.mark.parametrize("se_fused,launched", [(None, False), (True, True)])
def test_se_resnet50_default_plans_no_launch_where_kernels_would_run(se_fused, launched, monkeypatch):
    """SE-ResNet-50 itself, on the meta device (where the kernels would record their launches, as
    on CUDA they would run): the default plans none; se_fused=True plans them for every unit."""
    kw = {} if se_fused is None else {"se_fused": se_fused}
    with torch.device("meta"):
        model = create_model("se_resnet50", **kw).to(memory_format=torch.channels_last)
    x = torch.empty(2, 3, 64, 64, device="meta").contiguous(memory_format=torch.channels_last)
    with K.recording() as launches:
        model(x).sum().backward()
    assert bool(launches) == launched


@pytest.mark.parametrize("flag", [False, True])
def test_train_config_model_fused_opts_in(flag):
    """``senet train --set model.fused=true`` builds the network on the fused path; by default it is
    the reference composition, and the card (how to rebuild the network) is the same either way."""
    from senet.train import load_config
    from senet.train.setup import build_model, image_size, load_data

    cfg = load_config("bundled", [f"model.fused={str(flag).lower()}", "data.dataset=synthetic:8:3x16x16"])
    train_set, _ = load_data(cfg, image_size(cfg))
    model, card = build_model(cfg, train_set)
    flags = {m.fused for m in model.modules() if hasattr(m, "fused")}
    assert flags == ({True} if flag else {None})
    assert "se_fused" not in card.overrides
