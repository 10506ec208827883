"""Registry-wide checks: every registered model builds, runs forward and backward, and every SE
block it holds is actually called (the bug class of an SE module added but never used)."""

import pytest
import torch

import senet

ALL = senet.list_models()


def _check_forward_backward(name: str, device: str) -> None:
    torch.manual_seed(0)
    with torch.device(device):
        model = senet.create_model(name, num_classes=7)
    calls: dict[str, int] = {}
    for qualified, module in model.named_modules():
        if isinstance(module, senet.SqueezeExcite):
            calls[qualified] = 0
            module.register_forward_hook(lambda m, i, o, q=qualified: calls.__setitem__(q, calls[q] + 1))
    spec = senet.get_model_spec(name)
    assert spec.has_se == bool(calls), "an SE model must hold SE blocks and a plain one none"
    # Networks with valid-padded reductions (Inception-v3, IRv2) declare a larger minimum.
    side = max(32, getattr(model, "min_input_size", 32))
    x = torch.randn(2, 3, side, side, device=device)
    out = model(x)
    assert out.shape == (2, 7)
    if device != "meta":
        assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(c == 1 for c in calls.values()), {k: v for k, v in calls.items() if v != 1}
    for n, p in model.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"


@pytest.mark.parametrize("name", ALL)
def test_every_model_wires_every_se_block_and_parameter(name):
    """The whole registry on the meta device (shapes, no arithmetic): every SE block runs once and
    every parameter gets a gradient. The same check with real numbers is the slow test below."""
    _check_forward_backward(name, "meta")


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_forward_backward_and_every_se_block_runs(name):
    _check_forward_backward(name, "cpu")


@pytest.mark.parametrize("name,overrides", [("resnet20", {}), ("se_resnet20", {}),
                                            ("se_preact_resnet164", {"layers": (2, 2, 2)}), ("se_wrn16_8", {})])
def test_grey_and_odd_sized_input(name, overrides):
    model = senet.create_model(name, in_chans=1, num_classes=10, **overrides).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("name", ["se_resnet20", "vgg16_bn", "inception_v3", "mobilenet_v1", "shufflenet_v1_g3",
                                  "densenet121", "inception_resnet_v2", "bn_inception"])
def test_wrong_input_shape_is_named(name):
    with torch.device("meta"):  # shapes only
        model = senet.create_model(name, num_classes=3)
    side = max(32, getattr(model, "min_input_size", 32))
    with pytest.raises(ValueError, match=r"expects an \(N, 3, H, W\) input, got shape \(2, 1,.*in_chans=1"):
        model(torch.empty(2, 1, side, side, device="meta"))
    if getattr(model, "min_input_size", 1) > 32:
        with pytest.raises(ValueError, match=f"at least {model.min_input_size}x{model.min_input_size}"):
            model(torch.empty(2, 3, 32, 32, device="meta"))
