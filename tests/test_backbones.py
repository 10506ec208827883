"""The backbone interface of every family (timm's names and semantics): forward_features,
forward_head, reset_classifier, feature_info and features_only."""

import pytest
import torch

import senet
from senet.models.registry import get_model_spec

# One model per family and per block/stem kind; the registry-wide forward check is test_all_models.
REPRESENTATIVES = ["se_resnet20", "se_preact_resnet164", "se_resnet18", "legacy_se_resnet18", "se_cifar_convnet10",
                   "se_vgg16_bn", "se_bn_inception", "se_inception_v3", "se_inception_resnet_v2", "se_densenet121",
                   "se_mobilenet_v1", "se_shufflenet_v1_g3"]


def test_representatives_cover_every_family():
    # (other test modules register models of their own in the same process: only the package's count)
    specs = [get_model_spec(n) for n in senet.list_models()]
    families = {s.family for s in specs if s.builder.__module__.startswith("senet.")}
    assert families == {get_model_spec(n).family for n in REPRESENTATIVES}


@pytest.mark.slow
@pytest.mark.parametrize("name", REPRESENTATIVES)
def test_head_features_and_feature_info(name):
    torch.manual_seed(0)
    model = senet.create_model(name, num_classes=5).eval()
    side = max(32, getattr(model, "min_input_size", 32))
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
        assert torch.allclose(model.forward_head(feats), out, atol=1e-6)
        assert feats.shape[1] == model.num_features
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, model.head_hidden_size)
        levels = model.forward_intermediates(x, intermediates_only=True)  # what features_only returns
    info = model.feature_info
    assert [m.shape[1] for m in levels] == info.channels()
    assert [f["module"] for f in info] == info.module_name()
    assert info.reduction() == sorted(info.reduction()) and info.reduction()[-1] >= 4
    assert all(m.shape[0] == 2 and m.ndim == 4 for m in levels)
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.allclose(model(x), pooled, atol=1e-6)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        model.reset_classifier(-1)


@pytest.mark.parametrize("name,side", [("se_resnet50", 224), ("se_inception_v3", 299), ("se_densenet121", 224),
                                       ("se_mobilenet_v1", 224), ("se_shufflenet_v1_g3", 224), ("se_vgg16_bn", 224),
                                       ("se_bn_inception", 224), ("se_inception_resnet_v2", 299)])
def test_reductions_are_strides(name, side):
    with torch.device("meta"):  # shapes only, no arithmetic
        model = senet.create_model(name, features_only=True)
        levels = model(torch.empty(1, 3, side, side, device="meta"))
    for m, f in zip(levels, model.feature_info):
        # valid-padded stems (Inception) lose a few pixels: the stride is within 20% of nominal
        assert abs(side / m.shape[-1] / f["reduction"] - 1) < 0.2, (f, tuple(m.shape))


def test_se_resnet50_stages_are_what_a_detector_expects():
    model = senet.create_model("se_resnet50", features_only=True, out_indices=(1, 2, 3, 4)).eval()
    with torch.no_grad():
        maps = model(torch.randn(2, 3, 224, 224))
    assert [tuple(m.shape) for m in maps] == [(2, 256, 56, 56), (2, 512, 28, 28), (2, 1024, 14, 14), (2, 2048, 7, 7)]
    assert model.feature_info.channels() == [256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.module_name() == ["layer1", "layer2", "layer3", "layer4"]


def test_out_indices_negative_and_bad():
    with torch.device("meta"):
        model = senet.create_model("seresnet50", features_only=True, out_indices=(-2, -1))
        assert model.feature_info.reduction() == [16, 32]
        assert [m.shape[1] for m in model(torch.empty(1, 3, 64, 64, device="meta"))] == [1024, 2048]
        with pytest.raises(ValueError, match=r"out_indices=\(5,\).*\[-5, 4\]"):
            senet.create_model("se_resnet50", features_only=True, out_indices=(5,))
        with pytest.raises(TypeError, match="out_indices applies only with features_only"):
            senet.create_model("se_resnet50", out_indices=(1,))


def test_num_classes_zero_gives_pooled_features():
    model = senet.create_model("se_resnet20", num_classes=0).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 64)
    assert model.num_classes == 0
