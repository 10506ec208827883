"""Retrofitting SE and BN into existing networks (the transfer study's numbers, Keras convention)."""

import pytest
import torch
from torch import nn

import senet
from senet import SEConfig
from senet.models.retrofit import Retrofitted, keras_param_count, retrofit

from conftest import load_timm_fixture

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_trunk(num_classes=10, meta=False):
    """A user's own VGG16: 13 convs with bias + ReLU, max-pools, GAP, dense(10) - plain nn.Sequential."""
    with torch.device("meta" if meta else "cpu"):
        layers, c = [], 3
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))


R8 = SEConfig(reduction=8)  # the transfer study: r = 8, FC biases
SMALL = (3, 32, 32)


def test_seed003_vgg16_counts():
    model = vgg16_trunk(meta=True)
    assert keras_param_count(model) == 14_719_818
    report = retrofit(model, types=nn.Conv2d, se=None, bn=True, input_size=SMALL)
    assert keras_param_count(model) == 14_736_714
    assert len(report.inserted) == 13 and all(i.added == ("bn",) for i in report.inserted)
    # "SE after each conv block" = after every conv's activation: 15,194,074 (13 blocks);
    # after each of the 5 pooled blocks it would be 14,890,946.
    report = retrofit(model, conv_activations=True, se=R8, input_size=SMALL)
    assert keras_param_count(model) == 15_194_074
    assert report.params_added == 457_360


def test_seed003_vgg16_one_call_and_the_other_reading():
    model = vgg16_trunk(meta=True)
    retrofit(model, conv_activations=True, bn=True, se=R8, input_size=SMALL)
    assert keras_param_count(model) == 15_194_074
    five = vgg16_trunk(meta=True)
    retrofit(five, types=nn.Conv2d, se=None, bn=True, input_size=SMALL)
    report = retrofit(five, types=nn.MaxPool2d, se=R8, input_size=SMALL)
    assert [i.channels for i in report.inserted] == [64, 128, 256, 512, 512]
    assert keras_param_count(five) == 14_890_946 != 15_194_074


def test_seed003_mobilenet_counts_and_placement():
    with torch.device("meta"):
        model = senet.create_model("mobilenet_v1", num_classes=10)
    assert keras_param_count(model) == 3_239_114
    report = retrofit(model, conv_activations=True, depthwise=False, se=R8)
    assert keras_param_count(model) == 4_205_590
    expected = ["act1"] + [f"blocks.{s}.{b}.act2" for s, n in enumerate((1, 2, 2, 6, 2)) for b in range(n)]
    assert report.names == expected
    for name in expected:  # the inserted modules are exactly where requested
        wrapper = model.get_submodule(name)
        assert isinstance(wrapper, Retrofitted) and isinstance(wrapper.se, senet.SqueezeExcite)
        assert isinstance(wrapper.module, nn.ReLU6)
    assert not any(isinstance(model.get_submodule(f"blocks.{s}.0.act1"), Retrofitted) for s in range(5))
    assert "blocks.3.5.act2: se on 512 channels" in str(report)


def randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.2)


@pytest.mark.parametrize("how", [dict(conv_activations=True, bn=True), dict(types=nn.Conv2d, bn=True),
                                 dict(names="*.act2", se=SEConfig(reduction=4, gate="hard_sigmoid", fc="linear"))])
def test_identity_init_keeps_outputs(how):
    torch.manual_seed(0)
    model = senet.create_model("mobilenet_v1", num_classes=10)
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        retrofit(model, init="identity", input_size=(3, 64, 64), **how)
        after = model(x)
    assert (after - before).abs().max() < 1e-5
    assert any(isinstance(m, senet.SqueezeExcite) for m in model.modules())


def test_default_init_changes_outputs_and_trains():
    torch.manual_seed(0)
    model = vgg16_trunk().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    retrofit(model, conv_activations=True, input_size=SMALL)
    with torch.no_grad():
        assert (model(x) - before).abs().max() > 1e-3  # the sigmoid gate halves activations
    model.train()
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_identity_init_on_pretrained_weights_and_every_se_runs_once():
    _, sd, x, ref = load_timm_fixture("mobilenetv1_100")
    model = senet.create_model("mobilenet_v1").double().eval()
    senet.load_weights(model, sd, source="timm")
    report = retrofit(model, conv_activations=True, depthwise=False, bn=True, se=R8, init="identity")
    calls = {}
    for name, m in model.named_modules():
        if isinstance(m, senet.SqueezeExcite):
            calls[name] = 0
            m.register_forward_hook(lambda mod, i, o, n=name: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        out = model(x.double())
    assert (out - ref).abs().max() < 1e-6
    assert sorted(calls) == sorted(f"{n}.se" for n in report.names) and set(calls.values()) == {1}


def test_nothing_matches_fails_clearly():
    model = vgg16_trunk(meta=True)
    with pytest.raises(ValueError, match=r"no module .* matches names='blocks\.\*'"):
        retrofit(model, names="blocks.*", input_size=SMALL)
    with pytest.raises(ValueError, match="no module"):
        retrofit(model, types=nn.BatchNorm2d, input_size=SMALL)
    with pytest.raises(ValueError, match="no module"):
        retrofit(model, regex=r"features\.\d+", input_size=SMALL)
    with pytest.raises(ValueError, match=r"regex='\[' is not a valid regular expression"):
        retrofit(model, regex="[", input_size=SMALL)


def test_regex_and_glob_select_by_name():
    model = vgg16_trunk(meta=True)
    report = retrofit(model, regex=r"(1|3)", input_size=SMALL)
    assert report.names == ["1", "3"] and [i.channels for i in report.inserted] == [64, 64]
    model = vgg16_trunk(meta=True)
    assert retrofit(model, names="2?", input_size=SMALL).names == [str(i) for i in range(20, 30)]


def test_shared_and_non_spatial_modules_are_skipped_and_reported():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)
            self.relu = nn.ReLU()  # used twice, like torchvision's ResNet blocks
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = self.relu(self.conv2(self.relu(self.conv1(x))))
            return self.fc(x.mean((2, 3)))

    model = Shared()
    with pytest.raises(ValueError, match="called 2 times"):
        retrofit(model, types=nn.ReLU, input_size=SMALL)
    report = retrofit(model, types=(nn.Conv2d, nn.Linear), se=SEConfig(reduction=4), input_size=SMALL)
    assert report.names == ["conv1", "conv2"]
    assert report.skipped == [("fc", "output shape (1, 2) is not (N, C, H, W)")]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)


def test_existing_se_blocks_are_not_selected_and_retrofit_composes():
    with torch.device("meta"):
        model = senet.create_model("se_cifar_convnet10")
    report = retrofit(model, types=nn.ReLU, se=None, bn=True, input_size=SMALL)
    assert len(report.inserted) == 9  # the ReLUs inside the 9 SE blocks are left alone
    again = retrofit(model, types=nn.BatchNorm2d, input_size=SMALL)
    assert len(again.inserted) == 9  # the retrofitted BNs are not selected either


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "exactly one"),
    (dict(types=nn.ReLU, names="*"), "exactly one"),
    (dict(types=nn.ReLU, init="zero"), "init"),
    (dict(types=nn.ReLU, se=None), "nothing to insert"),
    (dict(types=nn.ReLU, se=SEConfig(gate="relu"), init="identity"), "positive at 0"),
    (dict(types=nn.ReLU, input_size=(3, 4, 4)), "input_size"),
])
def test_bad_requests_fail_naming_the_problem(kwargs, message):
    kwargs.setdefault("input_size", SMALL)
    with pytest.raises(ValueError, match=message):
        retrofit(vgg16_trunk(meta=True), **kwargs)
