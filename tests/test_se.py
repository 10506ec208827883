"""The SE block (paper §3, Eq. 2-4; Tables 11, 12, 16)."""

import pytest
import torch
from torch import nn

from senet import ConstantGate, SEConfig, SqueezeExcite, se_width


def test_sigmoid_scale_in_open_unit_interval_and_shape():
    se = SqueezeExcite(32, 4)
    x = torch.randn(3, 32, 5, 7)
    s = se.scale(x)
    assert s.shape == (3, 32, 1, 1)
    assert (s > 0).all() and (s < 1).all()
    torch.testing.assert_close(se(x), x * s)


def test_forcing_gate_to_one_is_exact_identity():
    se = SqueezeExcite(16, 4)
    se.gate = ConstantGate(1.0)
    x = torch.randn(2, 16, 4, 4)
    assert torch.equal(se(x), x)


def test_per_channel_constant_gate():
    se = SqueezeExcite(4, 2)
    se.gate = ConstantGate(torch.tensor([0.0, 1.0, 2.0, 0.5]))
    x = torch.ones(1, 4, 2, 2)
    assert se(x)[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0, 0.5]


@pytest.mark.parametrize("squeeze", ["avg", "max", "none"])
def test_conv_form_equals_linear_form(squeeze):
    conv = SqueezeExcite(24, 4, squeeze=squeeze, fc="conv")
    lin = SqueezeExcite(24, 4, squeeze=squeeze, fc="linear")
    lin.fc1.weight.data = conv.fc1.weight.data.flatten(1).clone()
    lin.fc1.bias.data = conv.fc1.bias.data.clone()
    lin.fc2.weight.data = conv.fc2.weight.data.flatten(1).clone()
    lin.fc2.bias.data = conv.fc2.bias.data.clone()
    x = torch.randn(2, 24, 6, 6)
    torch.testing.assert_close(conv(x), lin(x), rtol=1e-6, atol=1e-6)


def test_squeeze_operators():
    x = torch.randn(2, 8, 5, 5)
    avg = SqueezeExcite(8, 2, squeeze="avg")
    torch.testing.assert_close(avg.squeeze(x), x.mean((2, 3), keepdim=True))
    mx = SqueezeExcite(8, 2, squeeze="max")
    torch.testing.assert_close(mx.squeeze(x), x.amax((2, 3), keepdim=True))
    none = SqueezeExcite(8, 2, squeeze="none")  # NoSqueeze: per-position excitation
    s = none.scale(x)
    assert s.shape == x.shape
    # Each position's excitation depends only on that position's channel vector.
    x2 = x.clone()
    x2[:, :, 0, 0] += 1.0
    s2 = none.scale(x2)
    assert not torch.allclose(s2[:, :, 0, 0], s[:, :, 0, 0])
    torch.testing.assert_close(s2[:, :, 1:, :], s[:, :, 1:, :])


def test_gates_behave_as_specified():
    x = torch.randn(4, 16, 3, 3) * 5
    z = None
    for gate, check in {
        "sigmoid": lambda s: ((s > 0) & (s < 1)).all(),
        "tanh": lambda s: ((s > -1) & (s < 1)).all() and (s < 0).any(),
        "relu": lambda s: (s >= 0).all(),
        "hard_sigmoid": lambda s: ((s >= 0) & (s <= 1)).all(),
    }.items():
        torch.manual_seed(1)
        se = SqueezeExcite(16, 2, gate=gate)
        pre = se.fc2(se.act(se.fc1(se.squeeze(x))))
        s = se.scale(x)
        assert check(s), gate
        expected = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
                    "hard_sigmoid": lambda t: torch.clamp(t / 6 + 0.5, 0, 1)}[gate](pre)
        torch.testing.assert_close(s, expected)
        z = s
    assert z is not None


def test_gate_is_named_submodule_hookable():
    se = SqueezeExcite(8, 2)
    seen = []
    se.gate.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.randn(2, 8, 3, 3)
    y = se(x)
    assert len(seen) == 1 and seen[0].shape == (2, 8, 1, 1)
    torch.testing.assert_close(y, x * seen[0])


def test_bias_switch_and_width():
    assert SqueezeExcite(64, 16, bias=False).fc1.bias is None
    assert SqueezeExcite(64, 16).fc1.bias is not None
    assert SqueezeExcite(64, 16).width == 4
    assert SqueezeExcite(64, 16, divisor=8).width == 8  # timm seresnet18's rounding
    assert SqueezeExcite(64, width=10).width == 10


def test_width_rounding_rule():
    assert se_width(256, 16) == 16
    assert se_width(2048, 32) == 64
    assert se_width(24, 16) == 2  # 1.5 rounds half up
    assert se_width(20, 16) == 1
    assert se_width(64, 16, divisor=8) == 8
    assert se_width(192, 16, divisor=8) == 16  # 12 -> nearest multiple of 8, half up


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match="fewer than 1 channel"):
        SqueezeExcite(16, 32)
    with pytest.raises(ValueError, match=r"squeeze='mean'.*'avg'"):
        SqueezeExcite(16, 4, squeeze="mean")
    with pytest.raises(ValueError, match=r"gate='sigmod'.*Did you mean 'sigmoid'"):
        SqueezeExcite(16, 4, gate="sigmod")
    with pytest.raises(ValueError, match="se.position"):
        SEConfig(position="after")
    with pytest.raises(ValueError, match="reduction"):
        SEConfig(reduction=0)
    with pytest.raises(ValueError, match="SE option"):
        SEConfig().replace(ratio=4)


def test_wrong_input_shape_is_named():
    se = SqueezeExcite(16, 4)
    with pytest.raises(ValueError, match=r"\(N, 16, H, W\).*\(2, 8, 4, 4\)"):
        se(torch.randn(2, 8, 4, 4))


def test_identity_slot_is_identity():
    from senet.layers.se import make_se

    assert isinstance(make_se(None, 8), nn.Identity)
    assert isinstance(make_se(SEConfig(), 32), SqueezeExcite)
