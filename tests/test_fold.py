"""fold_for_inference: BN folded into the conv before it, same outputs, every family and SE option."""

import pytest
import torch
from small_models import family_cases, small_model
from torch import nn

import senet
from senet.deploy.fold import find_conv_bn_pairs


def _bns(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("name,overrides", family_cases(), ids=[n for n, _ in family_cases()])
def test_every_family_folds_with_equal_outputs(name, overrides):
    model, side = small_model(name, overrides)
    folded = senet.fold_for_inference(model)
    x = torch.randn(2, model.in_chans, side, side)
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert (want - got).abs().max().item() <= 1e-5
    # In float64 folding is exact up to float64 rounding: this is what catches a wrong pair or formula.
    model64, x64 = model.double(), x[:1].double()  # one image: float64 depthwise convs are slow on CPU
    folded64 = senet.fold_for_inference(model64, example_input=x64, check=False)
    with torch.no_grad():
        exact = (model64(x64) - folded64(x64)).abs().max().item()
    assert exact <= 1e-10
    model.float()
    assert not folded.training and model.training is False
    report = folded.fold_report
    has_bn = bool(_bns(model))
    assert bool(report.folded) == has_bn  # every family with BN has conv->BN pairs
    assert sorted(_bns(folded)) == sorted(report.kept_bn)
    assert len(report.folded) + len(report.kept_bn) == len(_bns(model))
    assert not any(isinstance(m, nn.Dropout) for m in folded.modules())
    assert report.dropped  # drop_rate=0.2 in every case
    assert all(isinstance(model.get_submodule(bn), nn.BatchNorm2d) for _, bn in report.folded)  # folded a copy
    for conv, bn in report.folded:
        assert folded.get_submodule(conv).bias is not None
        assert isinstance(folded.get_submodule(bn), (nn.Identity, nn.ReLU))


def test_bn_not_directly_after_a_conv_stays():
    model, side = small_model("se_preact_resnet164", {"num_classes": 5, "layers": (2, 1, 1)})
    pairs = dict((bn, conv) for conv, bn in find_conv_bn_pairs(model))
    # Pre-activation: each unit's first BN reads the previous unit's sum, and the final BN too.
    assert "layer1.1.bn1" not in pairs and "final_norm.0" not in pairs
    assert pairs["layer1.0.bn2"] == "layer1.0.conv1" and pairs["layer1.0.bn3"] == "layer1.0.conv2"
    dense, _ = small_model("se_densenet121", {"num_classes": 5, "layers": (1, 1, 1, 1)})
    pairs = dict((bn, conv) for conv, bn in find_conv_bn_pairs(dense))
    # DenseNet: BN-ReLU-conv; norm1 reads a concatenation, transitions' BN a block output.
    assert "features.denseblock1.denselayer1.norm1" not in pairs and "features.transition1.norm" not in pairs
    assert pairs["features.norm0"] == "features.conv0"
    assert pairs["features.denseblock1.denselayer1.norm2"] == "features.denseblock1.denselayer1.conv1"
    folded = senet.fold_for_inference(dense)
    # A folded BN-ReLU module keeps its ReLU.
    assert isinstance(folded.get_submodule("features.norm0"), nn.ReLU)


class _SharedOutput(nn.Module):
    """A conv whose output also feeds the sum, a conv modified in place before its BN, a conv called twice."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.conv4, self.bn4 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv1(x)
        y = self.bn1(y) + y  # conv1's output is read twice: cannot fold
        z = self.conv2(y)
        z.mul_(2)  # modified in place before the BN: cannot fold
        z = self.bn2(z)
        z = self.bn3(self.conv3(z))  # the one foldable pair
        return self.bn4(self.conv4(self.conv4(z)))  # conv4 called twice: cannot fold


def test_only_exclusive_unmodified_pairs_fold():
    torch.manual_seed(0)
    model = _SharedOutput()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    folded = senet.fold_for_inference(model, example_input=x)
    assert folded.fold_report.folded == [("conv3", "bn3")]
    assert isinstance(folded.bn3, nn.Identity) and isinstance(folded.bn1, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-5)


@pytest.mark.parametrize("option", [
    {"se_squeeze": "max"}, {"se_squeeze": "none"}, {"se_gate": "tanh"}, {"se_gate": "relu"},
    {"se_gate": "hard_sigmoid"}, {"se_position": "pre"}, {"se_position": "post"}, {"se_position": "identity"},
    {"se_position": "3x3"}, {"se_fc": "linear"},
], ids=lambda o: "-".join(map(str, o.values())))
def test_se_options_fold(option):
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1), **option})
    folded = senet.fold_for_inference(model, inplace=True)
    assert folded is model and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    reference, _ = small_model("se_resnet20", {"layers": (1, 1, 1), **option})
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert (reference(x) - folded(x)).abs().max().item() <= 1e-5


def test_training_mode_model_is_folded_with_running_statistics():
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    model.train()
    folded = senet.fold_for_inference(model)
    assert model.training and not folded.training
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert (model.eval()(x) - folded(x)).abs().max().item() <= 1e-5


def test_not_a_module_is_refused():
    with pytest.raises(TypeError, match="expects an nn.Module"):
        senet.fold_for_inference("se_resnet50")


def test_folding_inside_inference_mode_folds_the_same_pairs():
    # The pairs are read off an autograd graph: inside inference_mode one must still be recorded.
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    model.eval()
    x = torch.randn(2, 3, side, side)
    outside = senet.fold_for_inference(model, example_input=x).fold_report.folded
    with torch.inference_mode():
        folded = senet.fold_for_inference(model, example_input=x)
        assert folded.fold_report.folded == outside and not folded.fold_report.kept_bn
        assert (model(x) - folded(x)).abs().max().item() <= 1e-5
        made_here = senet.create_model("se_resnet20", layers=(1, 1, 1))
    with pytest.raises(ValueError, match="inference_mode"):
        senet.fold_for_inference(made_here, inplace=True)
