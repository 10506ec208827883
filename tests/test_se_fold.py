"""The SE fold of the inference path: the excitation computed from the unit's inner features and
folded into its last 1x1 convolution gives the folded network's logits within fp32 rounding."""

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import senet
from senet.deploy.fast import prepare_for_inference
from senet.deploy.fold import fold_for_inference
from senet.deploy import se_fold
from senet.deploy.se_fold import (FOLD_MIN_PIXELS_PER_CHANNEL, SEFoldedBottleneck, fold_se, folds_at,
                                  se_foldable_units, why_not_foldable)


def _with_statistics(model):
    """BatchNorm statistics and affine parameters away from the identity, so folding is tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model.eval()


def _close(got, want):
    return (got - want).abs().max().item() <= 1e-5 * (1 + want.abs().max().item())


NARROW = {"widths": (16, 32, 64, 128), "num_classes": 10}  # SE-ResNet-50's units, narrower: the default tier stays fast


@pytest.mark.parametrize("name,overrides", [
    ("se_resnet50", {"layers": (1, 1, 1, 1), **NARROW}),
    ("se_resnext50_32x4d", {"layers": (1, 1, 1, 1), **NARROW}),
    ("se_resnet50", {"layers": (2, 1, 1, 1), **NARROW}),
])
@pytest.mark.parametrize("batch", [1, 3])
def test_folded_se_equals_the_folded_network(name, overrides, batch):
    model = _with_statistics(senet.create_model(name, **overrides))
    folded = fold_for_inference(model)
    fused = copy.deepcopy(folded)
    names = fold_se(fused)
    assert names == se_foldable_units(folded) and len(names) == sum(overrides["layers"])
    assert all(isinstance(fused.get_submodule(n), SEFoldedBottleneck) for n in names)
    assert set(fused.state_dict()) == set(folded.state_dict())  # same names: the unit's own modules
    x = torch.randn(batch, 3, 64, 64)
    with torch.no_grad():
        want = folded(x)
        assert _close(fused(x), want)
        cl = fused.to(memory_format=torch.channels_last)
        assert _close(cl(x.contiguous(memory_format=torch.channels_last)), want)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_full_se_resnet50_through_prepare_for_inference(batch):
    model = _with_statistics(senet.create_model("se_resnet50"))
    x = torch.randn(batch, 3, 224, 224)
    plain = prepare_for_inference(model, batch, compile=False, example=x)
    fused = prepare_for_inference(model, batch, compile=False, se_fold=True, example=x)
    assert fused.inference_report.se_folded == 7  # the first two stages: 56 x 56 against 64, 28 x 28 against 128
    assert _close(fused(x), plain(x))


def test_prepare_for_inference_folds_se_on_request_and_reports_it():
    model = _with_statistics(senet.create_model("se_resnet50", layers=(2, 1, 1, 1), **NARROW))
    x = torch.randn(2, 3, 64, 64)  # the first stage's 16 x 16 maps fold (folds_at), the later ones do not
    plain = prepare_for_inference(model, 2, compile=False, example=x)
    fused = prepare_for_inference(model, 2, compile=False, se_fold=True, example=x)
    assert plain.inference_report.se_folded is None and fused.inference_report.se_folded == 2
    assert "SE folded into the last convolution of 2 units" in fused.inference_report.summary()
    assert [type(m).__name__ for m in fused.net.layer1] == ["SEFoldedBottleneck"] * 2
    assert type(fused.net.layer2[0]).__name__ == "Bottleneck"
    with torch.no_grad():
        assert _close(fused(x), plain(x)) and _close(fused(x), model(x))


def test_basic_units_are_left_as_they_are():
    # SE-ResNet-20 ends each unit with a 3x3 convolution: the mean does not commute with it at the
    # borders, so nothing is folded and the outputs are the folded network's.
    model = _with_statistics(senet.create_model("se_resnet20", layers=(1, 1, 1)))
    x = torch.randn(3, 3, 32, 32)
    plain = prepare_for_inference(model, 3, compile=False, example=x)
    fused = prepare_for_inference(model, 3, compile=False, se_fold=True, example=x)
    assert fused.inference_report.se_folded == 0
    assert torch.equal(fused(x), plain(x))
    assert why_not_foldable(model.layer1[0]) == "BasicBlock is not a bottleneck unit"


@pytest.mark.parametrize("change,reason", [
    (lambda b: setattr(b, "bn3", nn.BatchNorm2d(b.conv3.out_channels)), "the last BatchNorm is not folded"),
    (lambda b: b.se.register_forward_hook(lambda *a: None), "hooks"),
    (lambda b: setattr(b, "act_out", nn.SiLU()), "another activation"),
    (lambda b: setattr(b, "se", nn.Identity()), "no SE"),
])
def test_a_unit_the_algebra_does_not_cover_is_not_folded(change, reason):
    net = fold_for_inference(_with_statistics(senet.create_model("se_resnet50", layers=(1, 1, 1, 1), **NARROW)))
    block = net.layer1[0]
    assert why_not_foldable(block) is None
    change(block)
    assert reason in why_not_foldable(block)
    assert "layer1.0" not in fold_se(net) and not isinstance(net.layer1[0], SEFoldedBottleneck)


def test_the_plain_network_has_nothing_to_fold():
    assert se_foldable_units(fold_for_inference(senet.create_model("resnet50", layers=(1, 1, 1, 1), **NARROW))) == []


def test_se_fold_is_native_only():
    model = senet.create_model("se_resnet50", layers=(1, 1, 1, 1), **NARROW)
    with pytest.raises(ValueError, match="se_fold=True apply to backend='native'"):
        prepare_for_inference(model, 1, backend="onnxruntime", se_fold=True)
    with pytest.raises(TypeError, match="se_fold must be True or False"):
        prepare_for_inference(model, 1, se_fold="yes")


def test_tuned_choice_with_the_se_fold_is_served_with_it(tmp_path):
    from senet.deploy.tuner import candidates
    from senet.deploy.tuning import TunedChoice, model_name, record_choice

    assert [c.label for c in candidates(("native",), compile=False, se_fold=True)] == [
        "native eager", "native eager se_fold"]
    model = senet.create_model("se_resnet50", layers=(1, 1, 1, 1), **NARROW)
    path = tmp_path / "tuned.json"
    record_choice(TunedChoice(model_name(model), 1, (3, 64, 64), 1, "native", False, True,
                              {"native eager": 2.0, "native eager se_fold": 1.0}, 3, None, None, "t", "m", "now"),
                  path)
    served = prepare_for_inference(model, 1, backend="tuned", threads=1, tune_path=path,
                                   example=torch.randn(1, 3, 64, 64))
    assert served.inference_report.se_folded == 1 and not served.inference_report.compiled


@pytest.mark.slow
def test_the_folded_se_compiles_and_stays_equal():
    model = _with_statistics(senet.create_model("se_resnet50", layers=(2, 1, 1, 1), **NARROW))
    x = torch.randn(2, 3, 64, 64)  # the first stage's 16 x 16 maps fold (folds_at), the rest keep their end
    graphs = counters["stats"]["unique_graphs"]
    served = prepare_for_inference(model, 2, compile=True, se_fold=True, example=x)
    assert counters["stats"]["unique_graphs"] == graphs + 1  # one graph: the folded units break nothing
    assert served.inference_report.compiled and served.inference_report.se_folded == 2
    with torch.no_grad():
        assert _close(served(x), model(x))


@pytest.mark.parametrize("width,side,folds", [(64, 56, True), (128, 28, True), (256, 14, False), (512, 7, False),
                                               (16, 8, True), (32, 8, False)])
def test_units_fold_where_the_map_is_large_against_the_width(width, side, folds):
    assert folds_at((1, width, side, side)) is folds
    assert (side * side >= FOLD_MIN_PIXELS_PER_CHANNEL * width) is folds
    assert folds_at((1, width, side, side), 0)  # a unit built with threshold 0 always folds


@pytest.mark.parametrize("onednn", [True, False])
def test_an_identity_unit_folds_exactly_and_leaves_its_input_untouched(onednn, monkeypatch):
    monkeypatch.setattr(se_fold, "_onednn_serves", lambda h, shortcut: onednn)  # else the batched product
    model = _with_statistics(senet.create_model("se_resnet50", layers=(2, 1, 1, 1), **NARROW))
    unit = fold_for_inference(model).layer1[1]
    assert unit.downsample is None  # the shortcut is the unit's input itself
    x = torch.randn(3, 64, 16, 16).relu().contiguous(memory_format=torch.channels_last)
    kept = x.clone()
    with torch.no_grad():
        want = unit(x)
        folded = SEFoldedBottleneck(copy.deepcopy(unit))
        assert folds_at((3, 16, 16, 16))
        got = folded(x)
    assert _close(got, want) and torch.equal(x, kept)
