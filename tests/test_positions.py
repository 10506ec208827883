"""Where SE sits (paper Fig. 5, Tables 13-15): checked on single residual units with known gates."""

import pytest
import torch

import senet
from senet import ConstantGate


def set_gates(model, value):
    for m in model.modules():
        if isinstance(m, senet.SqueezeExcite):
            m.gate = ConstantGate(value)


@pytest.mark.parametrize("name", ["se_resnet20", "se_resnet50", "se_preact_resnet164", "se_wrn16_8"])
@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity", "3x3"])
def test_gate_one_recovers_the_baseline_exactly(name, position):
    torch.manual_seed(0)
    se = senet.create_model(name, num_classes=5, se_position=position).eval()
    base = senet.create_model(name, num_classes=5, se=None).eval()
    base.load_state_dict({k: v for k, v in se.state_dict().items() if ".se." not in k})
    set_gates(se, 1.0)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(se(x), base(x), rtol=0, atol=0)


def unit(position):
    model = senet.create_model("se_resnet50", num_classes=5, se_position=position).eval()
    return model.layer1[1]  # an identity-shortcut bottleneck with 256 channels in and out


def test_positions_with_zero_gate():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(2, 256, 8, 8))
    with torch.no_grad():
        u = unit("standard"); set_gates(u, 0.0)
        torch.testing.assert_close(u(x), x)  # residual branch silenced: relu(0 + x) = x
        u = unit("post"); set_gates(u, 0.0)
        assert torch.count_nonzero(u(x)) == 0  # after the addition: everything silenced
        u = unit("identity"); set_gates(u, 0.0)
        torch.testing.assert_close(u(x), torch.relu(u.residual(x)))  # identity branch silenced
        u = unit("pre"); set_gates(u, 0.0)
        torch.testing.assert_close(u(x), torch.relu(u.residual(torch.zeros_like(x)) + x))
        u = unit("3x3"); set_gates(u, 0.0)
        torch.testing.assert_close(u(x), torch.relu(u.bn3(u.conv3(torch.zeros(2, 64, 8, 8))) + x))


def test_se_widths_follow_position():
    def widths(position):
        m = senet.create_model("legacy_se_resnet50", se_position=position)
        return m.layer1[0].se.channels, m.layer2[0].se.channels

    assert widths("standard") == (256, 512)
    assert widths("post") == (256, 512)
    assert widths("identity") == (256, 512)
    assert widths("pre") == (64, 256)  # the unit's input
    assert widths("3x3") == (64, 128)  # the bottleneck's inner width


def test_stage_selection():
    m = senet.create_model("se_resnet20", se_stages=(1, 3))
    has = [any(isinstance(x, senet.SqueezeExcite) for x in s.modules()) for s in m.stages()]
    assert has == [True, False, True]


def test_stride_layouts():
    legacy = senet.create_model("legacy_se_resnet50")
    tv = senet.create_model("se_resnet50")
    assert legacy.layer2[0].conv1.stride == (2, 2) and legacy.layer2[0].conv2.stride == (1, 1)
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    assert legacy.maxpool.ceil_mode and not tv.maxpool.ceil_mode
