"""Exact parameter counts (paper Tables 2, 10, 13, 15; published models) and multiply-adds (Table 2)."""

import pytest
import torch

import senet


def n_params(name: str, **overrides) -> int:
    with torch.device("meta"):  # shapes only: fast, no memory
        model = senet.create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name, expected",
    [
        ("resnet50", 25_557_032),
        ("se_resnet18", 11_779_624),
        ("se_resnet34", 21_960_416),
        ("se_resnet50", 28_088_024),
        ("se_resnet101", 49_326_872),
        ("se_resnet152", 66_821_848),
        ("resnext50_32x4d", 25_028_904),
        ("se_resnext50_32x4d", 27_559_896),
        ("se_resnext101_32x4d", 48_955_416),
        ("senet154", 115_088_984),
        ("legacy_senet154", 115_088_984),
        ("legacy_se_resnet18", 11_778_592),
        ("legacy_se_resnet34", 21_958_868),
        ("legacy_se_resnet50", 28_088_024),
        ("legacy_se_resnext26_32x4d", 16_790_280),
        ("legacy_se_resnext50_32x4d", 27_559_896),
        # CIFAR networks of their original papers: ResNet-20 0.27M (option A), WRN-16-8 11.0M
        ("resnet20", 269_722),
    ],
)
def test_published_parameter_counts(name, expected):
    assert n_params(name) == expected


@pytest.mark.parametrize("model", ["se_resnet50", "legacy_se_resnet50"])
@pytest.mark.parametrize(
    "reduction, expected", [(2, 45_699_240), (4, 35_635_688), (8, 30_603_912), (16, 28_088_024), (32, 26_830_080)]
)
def test_table10_reduction_ratio(model, reduction, expected):
    assert n_params(model, se_reduction=reduction) == expected


def test_table10_without_se_bias():
    assert n_params("legacy_se_resnet50", se_bias=False) == 28_071_976


@pytest.mark.parametrize(
    "stages, expected",
    [((1,), 25_582_424), ((2,), 25_690_280), ((3,), 26_349_992), ((4,), 27_136_424), ((1, 2, 3), 26_508_632)],
)
def test_table13_se_per_stage(stages, expected):
    assert n_params("legacy_se_resnet50", se_stages=stages) == expected


def test_table15_se_3x3():
    assert n_params("legacy_se_resnet50", se_position="3x3") == 25_718_228


def test_baseline_is_same_model_without_se():
    assert n_params("se_resnet50", se=None) == n_params("resnet50")
    assert n_params("legacy_se_resnet50", se=None) == 25_557_032


def gmacs(name: str, **overrides) -> senet.Complexity:
    return senet.complexity(senet.create_model(name, **overrides), (3, 224, 224))


def test_table2_multiply_adds_authors_layout():
    se = gmacs("legacy_se_resnet50")
    base = gmacs("legacy_se_resnet50", se=None)
    assert round(se.macs / 1e9, 4) == 3.8605
    assert round(se.paper_flops / 1e9, 2) == 3.87  # paper Table 2, SE-ResNet-50
    assert round(base.paper_flops / 1e9, 2) == 3.86  # paper Table 2, ResNet-50
    # SE work = its FCs + pooling and scaling of each block's output (2 x C x H x W).
    expected_ops = 2 * (3 * 256 * 56 * 56 + 4 * 512 * 28 * 28 + 6 * 1024 * 14 * 14 + 3 * 2048 * 7 * 7)
    assert se.se_ops == expected_ops
    assert se.se_blocks == 16


def test_table2_multiply_adds_torchvision_layout():
    assert round(gmacs("resnet50").macs / 1e9, 3) == 4.089
    assert round(gmacs("se_resnet50").macs / 1e9, 4) == 4.0917


def test_complexity_per_stage_and_se_share():
    c = gmacs("se_resnet50")
    parts = {p.name: p for p in c.parts}
    assert set(["layer1", "layer2", "layer3", "layer4", "fc"]) <= set(parts)
    assert c.params == 28_088_024
    assert c.se_params == 28_088_024 - 25_557_032
    assert parts["fc"].macs == 2048 * 1000
    assert sum(p.se_params for p in c.parts) == c.se_params
    assert parts["layer4"].se_params > parts["layer1"].se_params
    # Table 13: stage 4 (conv5_x) holds most of SE's parameters.
    assert parts["layer4"].se_params / c.se_params > 0.6


def test_complexity_leaves_model_untouched():
    model = senet.create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    senet.complexity(model, (3, 32, 32))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_complexity_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        senet.complexity(senet.create_model("resnet20"), (32, 32))
