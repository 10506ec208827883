"""Conformance of every family to the shared model API (timm's; docs/backbones.md): one model per
family at reduced depth or width, checked method by method."""

import copy
import math
import re

import pytest
import torch

import senet
from senet.models.features import FeatureBackbone
from senet.models.registry import get_model_spec

# (name, overrides, input side): the smallest member of each family that keeps its structure.
FAMILIES = {
    "se_resnet": ("se_resnet50", dict(layers=(1, 1, 1, 1)), 64),
    "se_resnext": ("se_resnext50_32x4d", dict(layers=(1, 1, 1, 1)), 64),
    "senet154": ("senet154", dict(layers=(1, 1, 1, 1)), 64),
    "se_bn_inception": ("se_bn_inception", {}, 64),
    "se_inception_v3": ("se_inception_v3", {}, 75),
    "se_inception_resnet_v2": ("se_inception_resnet_v2", {}, 75),
    "se_vgg": ("se_vgg16_bn", dict(layers=(16, "M", 32, "M", 32, "M"), mlp_width=32), 32),
    "se_mobilenet": ("se_mobilenet_v1", {}, 64),
    "se_shufflenet": ("se_shufflenet_v1_g3", {}, 64),
    "se_densenet": ("se_densenet121", dict(layers=(1, 1, 1, 1), growth=16, stem_width=32), 64),
    "cifar_resnet": ("se_resnet20", {}, 32),
    "cifar_preact": ("se_preact_resnet164", dict(layers=(1, 1, 1)), 32),
    "transfer_net": ("se_cifar_convnet10", {}, 32),
}
IDS = list(FAMILIES)


def build(name: str, overrides: dict, **extra) -> torch.nn.Module:
    """The model with the given overrides; Inception-ResNet-v2 (no depth argument) keeps one
    block of each repeated stage, built on the meta device first so the 55M weights are never made."""
    torch.manual_seed(0)
    if get_model_spec(name).builder.__name__ != "InceptionResNetV2":
        return senet.create_model(name, **overrides, **extra)
    with torch.device("meta"):
        model = senet.create_model(name, **overrides, **extra)
    for stage in ("repeat", "repeat_1", "repeat_2"):
        setattr(model, stage, getattr(model, stage)[:1])
    model.to_empty(device="cpu")
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    model.init_weights()
    return model


_CACHE: dict[str, torch.nn.Module] = {}


def model_of(family: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A fresh copy of the family's model (built once per session) and a seeded input."""
    name, overrides, side = FAMILIES[family]
    if family not in _CACHE:
        _CACHE[family] = build(name, dict(overrides, num_classes=5))
    torch.manual_seed(1)
    return copy.deepcopy(_CACHE[family]), torch.randn(2, 3, side, side)


def test_every_family_is_covered():
    families = {get_model_spec(n).family for n in senet.list_models()
                if get_model_spec(n).builder.__module__.startswith("senet.")}
    assert {get_model_spec(name).family for name, _, _ in FAMILIES.values()} == families
    builders = {get_model_spec(n).builder for n in senet.list_models()
                if get_model_spec(n).builder.__module__.startswith("senet.")}
    assert {get_model_spec(name).builder for name, _, _ in FAMILIES.values()} == builders


@pytest.mark.parametrize("family", IDS)
def test_intermediates_match_feature_info(family):
    model, x = model_of(family)
    model.eval()
    info = model.feature_info
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
    assert [m.shape[1] for m in maps] == info.channels()
    side = x.shape[-1]
    for m, f in zip(maps, info):
        if family in ("se_inception_v3", "se_inception_resnet_v2"):  # valid-padded: a few pixels short
            assert side // (2 * f["reduction"]) <= m.shape[-1] <= math.ceil(side / f["reduction"]), (f, m.shape)
        else:
            assert m.shape[-1] == math.ceil(side / f["reduction"]), (f, m.shape)
    assert model.num_features == info[-1]["num_chs"] == final.shape[1]


@pytest.mark.parametrize("name,side", [("se_inception_v3", 299), ("se_inception_resnet_v2", 299),
                                       ("se_bn_inception", 224), ("senet154", 224)])
def test_full_size_reductions_on_meta(name, side):
    with torch.device("meta"):
        model = senet.create_model(name)
        maps = model.forward_intermediates(torch.empty(1, 3, side, side), intermediates_only=True)
    for m, f in zip(maps, model.feature_info):
        assert abs(side / m.shape[-1] / f["reduction"] - 1) < 0.2, (f, tuple(m.shape))


@pytest.mark.parametrize("family", IDS)
def test_stop_early_and_intermediates_only(family):
    model, x = model_of(family)
    model.eval()
    info = model.feature_info
    deeper = [n for n in model.stem_steps + model.stage_steps][
        (model.stem_steps + model.stage_steps).index(info[1]["module"]) + 1:]
    calls = []
    for n in deeper:
        model.get_submodule(n).register_forward_hook(lambda *a, n=n: calls.append(n))
    with torch.no_grad():
        _, everything = model.forward_intermediates(x)
        calls.clear()
        final, maps = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert calls == [] and len(maps) == 2
        assert torch.equal(final, maps[-1])
        only = model.forward_intermediates(x, indices=2, intermediates_only=True)  # an int: the last n
        assert isinstance(only, list) and len(only) == 2
        assert torch.allclose(only[-1], everything[-1]) and torch.allclose(maps[0], everything[0])
        neg = model.forward_intermediates(x, indices=(-1,), intermediates_only=True)
        assert torch.allclose(neg[0], everything[-1])
    with pytest.raises(ValueError, match="indices"):
        model.forward_intermediates(x, indices=(len(info),))
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_norm_applies_the_final_norm_to_the_last_map():
    model, x = model_of("cifar_preact")
    model.eval()
    with torch.no_grad():
        final, raw = model.forward_intermediates(x)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        assert torch.allclose(normed[-1], model.final_norm(raw[-1].clone()))
        assert torch.allclose(normed[-1], final)
        assert torch.equal(normed[0], raw[0])


@pytest.mark.parametrize("family", IDS)
def test_grad_checkpointing_gives_equal_gradients(family):
    model, x = model_of(family)
    twin = copy.deepcopy(model)
    twin.set_grad_checkpointing()
    stage = twin.get_submodule(twin.stage_steps[0])
    first = next(m for m in stage.modules() if any(True for _ in m.parameters(recurse=False)))
    runs = []
    first.register_forward_hook(lambda *a: runs.append(1))
    grads = []
    for m in (model, twin):
        m.train()
        torch.manual_seed(2)  # the same dropout masks
        m(x).square().mean().backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    assert len(runs) == 2  # the first stage's first layer ran again in the backward pass: checkpointed
    assert grads[0].keys() == grads[1].keys()
    for n, g in grads[0].items():
        assert g is not None, n
        torch.testing.assert_close(grads[1][n], g, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("family", IDS)
def test_features_only_keeps_the_model_keys(family):
    name, overrides, side = FAMILIES[family]
    classifier, x = model_of(family)
    if name == "se_inception_resnet_v2":  # shortened by hand (see build): wrap it as create_model would
        backbone = FeatureBackbone(build(name, dict(overrides, num_classes=5)))
    else:
        backbone = senet.create_model(name, **overrides, num_classes=5, features_only=True)
    keys, base_keys = set(backbone.state_dict()), set(classifier.state_dict())
    assert keys < base_keys
    head = classifier.classifier_name + "."
    if classifier.norm_name is None:  # only the head was pruned
        assert {k for k in base_keys - keys} == {k for k in base_keys if k.startswith((head, "pre_logits."))}
    result = backbone.load_state_dict(classifier.state_dict(), strict=False)
    assert result.missing_keys == [] and set(result.unexpected_keys) == base_keys - keys
    classifier.eval(), backbone.eval()
    with torch.no_grad():
        maps = backbone(x)
        expected = classifier.forward_intermediates(x, intermediates_only=True)
    assert backbone.feature_info == classifier.feature_info
    assert len(maps) == len(expected)
    for m, e in zip(maps, expected):
        torch.testing.assert_close(m, e)


def test_features_only_stops_after_the_last_requested_level():
    full = build("se_resnet50", dict(layers=(1, 1, 1, 1)))
    backbone = build("se_resnet50", dict(layers=(1, 1, 1, 1)), features_only=True, out_indices=(1, 2))
    assert not any(k.startswith(("layer3.", "layer4.", "fc.")) for k in backbone.state_dict())
    assert all(k in full.state_dict() for k in backbone.state_dict())
    assert backbone.feature_info.module_name() == ["layer1", "layer2"]
    maps = backbone.eval()(torch.randn(1, 3, 64, 64))
    assert [m.shape[1] for m in maps] == [256, 512]
    assert backbone.training is False and backbone.model.training is False


@pytest.mark.parametrize("family", IDS)
def test_reset_classifier_and_get_classifier_agree(family):
    model, x = model_of(family)
    model.eval()
    assert model.get_classifier() is model.get_submodule(model.classifier_name)
    assert model.get_classifier().out_features == model.num_classes == 5
    model.reset_classifier(7)
    fc = model.get_classifier()
    assert isinstance(fc, torch.nn.Linear) and (fc.in_features, fc.out_features) == (model.head_hidden_size, 7)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert model(x).shape == (2, 7) and model.num_classes == 7
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity) and model.num_classes == 0
        pooled = model.forward_head(feats)
        assert pooled.shape == (2, model.head_hidden_size)
        torch.testing.assert_close(pooled, model.forward_head(feats, pre_logits=True))
        for pool in ("max", "avgmax"):
            model.reset_classifier(0, global_pool=pool)
            assert model.forward_head(feats).shape == (2, model.head_hidden_size)
        model.reset_classifier(0, global_pool="")
        unpooled = model.forward_head(feats)
        assert unpooled.ndim == 4 and unpooled.shape[1] == model.head_hidden_size
        if isinstance(model.pre_logits, torch.nn.Identity):  # no pre-logits layers (all but VGG-16)
            torch.testing.assert_close(unpooled, feats)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="")
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="median")
    with pytest.raises(ValueError, match="num_classes must be an int >= 0"):
        model.reset_classifier(-1)
    model.reset_classifier(3, global_pool="avg")
    assert model.forward_head(feats).shape == (2, 3)


@pytest.mark.parametrize("family", IDS)
@pytest.mark.parametrize("coarse", [True, False])
def test_group_matcher_covers_every_parameter(family, coarse):
    model, _ = model_of(family)
    groups = model.group_matcher(coarse=coarse)
    assert set(groups) == {"stem", "blocks", "head"}
    ordinals = [o for _, o in groups["blocks"]]
    assert ordinals == [(i,) for i in range(len(ordinals))]
    patterns = [groups["stem"], *(p for p, _ in groups["blocks"]), groups["head"]]
    for n, _ in model.named_parameters():
        matched = [p for p in patterns if re.match(p, n)]
        assert len(matched) == 1, (n, matched)
    assert any(re.match(groups["head"], n) for n, _ in model.named_parameters())
    assert any(re.match(groups["stem"], n) for n, _ in model.named_parameters())
    if not coarse:
        assert len(groups["blocks"]) >= len(model.group_matcher(coarse=True)["blocks"])


@pytest.mark.parametrize("family", IDS)
def test_no_weight_decay_declares_no_extra_parameters(family):
    # timm's meaning: extra names exempt beyond the optimiser's own rule (1-d parameters, biases);
    # a transformer would name its position embedding, these CNNs have nothing of the kind.
    model, _ = model_of(family)
    assert model.no_weight_decay() == set()


@pytest.mark.parametrize("family", IDS)
def test_torch_export_equals_eager(family):
    model, x = model_of(family)
    model.eval()
    with torch.no_grad():
        eager = model(x)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        exported = program.module()(x)
    torch.testing.assert_close(exported, eager, rtol=1e-4, atol=1e-5)


def test_torchscript_is_refused_with_a_pointer_to_export():
    model = senet.create_model("se_resnet20")
    with pytest.raises(RuntimeError, match=r"torch\.export"):
        torch.jit.script(model)


@pytest.mark.slow
@pytest.mark.parametrize("name,side", [("se_inception_resnet_v2", 299), ("se_resnet50", 224)])
def test_full_size_api(name, side):
    model = senet.create_model(name).eval()
    x = torch.randn(1, 3, side, side)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        assert [m.shape[1] for m in maps] == model.feature_info.channels()
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x), rtol=1e-4, atol=1e-5)
