"""The rest of the paper's zoo (Tables 2-3, seeds 003/004): exact parameter counts, the paper's
cost columns, where SE sits in each family, and timm weight compatibility."""

import pytest
import torch
from torch import nn

import senet
from senet.layers.se import ConstantGate, SEConfig
from senet.models.densenet import DenseNet
from senet.models.inception_resnet import block35
from senet.models.shufflenet import ShuffleUnit
from senet.models.retrofit import keras_param_count

from conftest import load_timm_fixture


def build(name, **kw):
    with torch.device("meta"):
        return senet.create_model(name, **kw)


def params(name, **kw):
    return sum(p.numel() for p in build(name, **kw).parameters())


def cost(name):
    return senet.complexity(build(name), senet.get_model_spec(name).input_size)


def table3_mflops(c):
    """Table 3's convention, inferred: multiply-adds plus one operation per element an SE block
    pools (569 -> 572 and +2 MFLOPs only come out this way; counting pooling and scaling gives
    575 and +3.8). ``se_ops`` counts both, two per element."""
    return (c.macs + c.se_ops // 2) / 1e6


@pytest.mark.parametrize("name, expected", [
    ("vgg16", 138_357_544), ("vgg16_bn", 138_365_992), ("inception_v3", 23_834_568),
    ("inception_resnet_v2", 55_843_464), ("mobilenet_v1", 4_231_976), ("densenet121", 7_978_856),
    ("densenet169", 14_149_480), ("densenet201", 20_013_928),  # as torchvision's and timm's
])
def test_exact_parameter_counts(name, expected):
    assert params(name) == expected
    assert params(f"se_{name}", se=None) == expected  # every SE model's baseline is the plain twin
    assert params(f"se_{name}") > expected


def test_seed003_cifar_network_keras_counts():
    # Keras counts BN moving mean/variance as (non-trainable) weights.
    assert keras_param_count(build("cifar_convnet10")) == 1_927_946
    assert keras_param_count(build("se_cifar_convnet10")) == 1_993_970
    assert keras_param_count(build("se_cifar_convnet10", se=None)) == 1_927_946


def test_keras_count_adds_two_per_bn_channel_with_running_stats():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(5, track_running_stats=False))
    assert keras_param_count(net) == (12 + 4) + 8 + 8 + 10


def test_table3_mobilenet():
    plain, se = cost("mobilenet_v1"), cost("se_mobilenet_v1")
    assert abs(plain.params / 1e6 - 4.2) <= 0.05 and abs(se.params / 1e6 - 4.7) <= 0.05
    assert abs(table3_mflops(plain) - 569) <= 1 and abs(table3_mflops(se) - 572) <= 1
    assert se.se_blocks == 13


def test_table3_shufflenet():
    plain, se = cost("shufflenet_v1_g3"), cost("se_shufflenet_v1_g3")
    # Table 3 truncates to 0.1M: 1.87M -> "1.8M", 2.48M -> "2.4M"; SE adds 0.62M.
    assert int(plain.params / 1e5) == 18 and int(se.params / 1e5) == 24
    assert abs((se.params - plain.params) / 1e6 - 0.6) <= 0.05
    # The paper's 140 is the nominal budget of "ShuffleNet 1x" (next test); SE adds +2.
    assert round(140 + table3_mflops(se) - table3_mflops(plain)) == 142
    assert se.se_blocks == 16


def no_head_mflops(model, c):
    """The ShuffleNet paper's count: multiply-adds of the convolutions, classifier left out."""
    head = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return (c.macs - sum(p.macs for p in c.parts if p.name in head)) / 1e6


@pytest.mark.parametrize("groups, mflops", [(1, 143), (2, 140), (3, 137), (4, 133), (8, 137)])
def test_shufflenet_paper_table1_costs(groups, mflops):
    """Zhang et al. 2017, Table 1: each group count of ShuffleNet 1x, to the MFLOP. Their Table 2
    labels all of them "140 MFLOPs", which is where the SE paper's figure comes from."""
    model = build("shufflenet_v1_g3", groups=groups)
    assert round(no_head_mflops(model, senet.complexity(model, (3, 224, 224)))) == mflops


def test_table2_costs():
    assert round(cost("vgg16_bn").macs / 1e9, 2) == 15.47
    assert round(table3_mflops(cost("se_vgg16_bn")) / 1e3, 2) == 15.48
    assert round(cost("bn_inception").macs / 1e9, 2) == 2.03
    assert round(cost("se_bn_inception").paper_flops / 1e9, 2) == 2.04


def se_blocks(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, senet.SqueezeExcite)}


def test_placement_per_family():
    vgg = se_blocks(build("se_vgg16_bn"))
    assert len(vgg) == 13 and all(n.startswith("features.") and n.endswith(".se") for n in vgg)
    mob = se_blocks(build("se_mobilenet_v1"))
    assert [m.channels for m in mob.values()] == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    assert len(se_blocks(build("se_mobilenet_v1", stem_se=True))) == 14
    shuf = se_blocks(build("se_shufflenet_v1_g3"))
    assert [m.channels for m in shuf.values()] == [216] + [240] * 3 + [240] + [480] * 7 + [480] + [960] * 3
    v3 = se_blocks(build("se_inception_v3"))
    assert sorted(n.split(".")[0] for n in v3) == sorted(
        ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
         "Mixed_7a", "Mixed_7b", "Mixed_7c"])
    assert [m.channels for m in v3.values()][-1] == 2048
    bni = se_blocks(build("se_bn_inception"))
    assert [m.channels for m in bni.values()] == [256, 320, 576, 576, 576, 608, 608, 1056, 1024, 1024]
    irv2 = se_blocks(build("se_inception_resnet_v2"))
    assert len(irv2) == 40 and not any(n.startswith("mixed") for n in irv2)
    dense = se_blocks(build("se_densenet121"))
    assert len(dense) == 58 and {m.channels for m in dense.values()} == {32}
    block = se_blocks(build("se_densenet121", placement="block"))
    assert [m.channels for m in block.values()] == [256, 512, 1024, 1024]


def zero_gates(module):
    for m in module.modules():
        if isinstance(m, senet.SqueezeExcite):
            m.gate = ConstantGate(0.0)


def test_se_acts_on_the_branch_before_aggregation():
    """With every gate at 0, only the identity paths survive: SE sits on the branch."""
    x = torch.randn(2, 320, 5, 5)
    blk = block35(SEConfig()).eval()
    zero_gates(blk)
    torch.testing.assert_close(blk(x), torch.relu(x))

    unit = ShuffleUnit(240, 240, 1, 3, 3, SEConfig()).eval()
    zero_gates(unit)
    x = torch.randn(2, 240, 6, 6)
    torch.testing.assert_close(unit(x), torch.relu(x))
    down = ShuffleUnit(240, 480, 2, 3, 3, SEConfig()).eval()
    zero_gates(down)
    out = down(x)
    torch.testing.assert_close(out[:, :240], torch.relu(nn.functional.avg_pool2d(x, 3, 2, 1)))
    assert out[:, 240:].abs().max() == 0

    net = DenseNet((2, 2), num_classes=3, se=SEConfig(reduction=4)).eval()
    zero_gates(net)
    block = net.features.denseblock1
    x = torch.randn(1, 64, 8, 8)
    out = block(x)
    torch.testing.assert_close(out[:, :64], x)
    assert out[:, 64:].abs().max() == 0


@pytest.mark.parametrize("builder, kwargs, argument", [
    ("vgg16", dict(layers=(64, "X")), "layers"),
    ("densenet121", dict(placement="everywhere"), "placement"),
    ("shufflenet_v1_g3", dict(groups=5), "groups"),
    ("mobilenet_v1", dict(act="tanh"), "act"),
    ("mobilenet_v1", dict(stem_se=True), "stem_se"),
    ("vgg16", dict(head="dense"), "head"),
    ("inception_v3", dict(variant="v4"), "variant"),
])
def test_bad_arguments_name_the_argument(builder, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        build(builder, **kwargs)


FIXTURES = {"mobilenetv1_100": "mobilenet_v1", "densenet121": "densenet121", "vgg16_bn": "vgg16_bn",
            "inception_v3": "inception_v3", "inception_resnet_v2": "inception_resnet_v2"}


@pytest.mark.parametrize("fixture, name", FIXTURES.items())
def test_timm_layouts_have_the_same_keys_and_shapes(fixture, name):
    import json
    from conftest import FIXTURES as ROOT
    meta = json.loads((ROOT / "timm" / f"{fixture}.json").read_text())
    ours = {k: tuple(v.shape) for k, v in build(name).state_dict().items()}
    assert ours == {k: tuple(s) for k, s in meta["state_dict"]}
    assert meta["num_params"] == params(name)


def check_logits(fixture, name):
    _, sd, x, ref = load_timm_fixture(fixture)
    model = senet.create_model(name).double().eval()
    senet.load_weights(model, sd, source="timm")
    with torch.no_grad():
        out = model(x.double())
    assert (out - ref).abs().max() < 1e-6


@pytest.mark.parametrize("fixture", ["mobilenetv1_100", "densenet121"])
def test_timm_weights_reproduce_reference_logits(fixture):
    check_logits(fixture, FIXTURES[fixture])


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["vgg16_bn", "inception_v3", "inception_resnet_v2"])
def test_timm_weights_reproduce_reference_logits_large(fixture):
    check_logits(fixture, FIXTURES[fixture])
