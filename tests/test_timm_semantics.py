"""timm's names keep timm's meanings: ``out_indices`` as an int, ``feature_info``'s accessors,
``no_weight_decay``, ``global_pool``; and the card follows the head (``reset_classifier``) and
travels with ``features_only`` networks, as timm's ``pretrained_cfg`` does."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import senet
from senet.models.card import ModelCard, card_of
from senet.models.features import FeatureInfo, select
from small_models import family_cases

SMALL50 = {"layers": (1, 1, 1, 1), "widths": (16, 16, 32, 32)}  # levels: act1, layer1..4


# ----- the card follows the head -------------------------------------------------------------

def test_reset_classifier_then_card_build_gives_that_head():
    model = senet.create_model("se_resnet20")
    named = model.pretrained_cfg.replace(classes=tuple(f"c{i}" for i in range(10)))
    model.pretrained_cfg = model.default_cfg = named
    model.reset_classifier(7)
    card = model.pretrained_cfg
    assert model.default_cfg is card
    assert card.num_classes == 7 and card.overrides["num_classes"] == 7
    assert card.classes is None  # a fresh classifier predicts unnamed classes
    rebuilt = card.build()
    assert rebuilt.get_classifier().out_features == 7
    assert rebuilt(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert rebuilt.pretrained_cfg == card


def test_reset_classifier_to_features_and_pooling_is_rebuilt():
    model = senet.create_model("se_resnet20")
    model.reset_classifier(0, "max")
    card = model.pretrained_cfg
    assert card.num_classes == 0 and card.overrides["global_pool"] == "max"
    rebuilt = card.build().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rebuilt(x).shape == (2, 64)
        torch.testing.assert_close(rebuilt(x), rebuilt.forward_features(x).amax((2, 3)))
    model.reset_classifier(0, "")
    with torch.no_grad():
        assert model.pretrained_cfg.build()(x).shape == (2, 64, 8, 8)


def test_with_head_replaces_or_drops_names():
    card = senet.create_model("se_resnet20").pretrained_cfg
    named = card.with_head(3, classes=["cat", "dog", "owl"])
    assert named.classes == ("cat", "dog", "owl") and named.num_classes == 3
    assert named.with_head(3).classes is None
    with pytest.raises(ValueError, match="2 class names for num_classes=3"):
        card.with_head(3, classes=["cat", "dog"])


def test_features_only_networks_carry_the_card():
    classifier = senet.create_model("se_resnet20")
    backbone = senet.create_model("se_resnet20", features_only=True, out_indices=2)
    card = backbone.pretrained_cfg
    assert isinstance(card, ModelCard) and card_of(backbone) is card and backbone.default_cfg is card
    want = classifier.pretrained_cfg
    assert (card.name, card.input_size, card.mean, card.std, card.crop_pct, card.interpolation) == \
        (want.name, want.input_size, want.mean, want.std, want.crop_pct, want.interpolation)
    assert card.num_classes == 0 and card.classes is None  # its classifier was pruned


# ----- out_indices and feature_info ----------------------------------------------------------

def test_out_indices_int_is_the_last_n_levels():
    torch.manual_seed(0)
    backbone = senet.create_model("se_resnet50", features_only=True, out_indices=2, **SMALL50).eval()
    assert backbone.feature_info.module_name() == ["layer3", "layer4"]
    torch.manual_seed(0)
    model = senet.create_model("se_resnet50", **SMALL50).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = backbone(x)
        expected = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [m.shape[1] for m in maps] == [128, 128] == backbone.feature_info.channels()
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want)


def test_select_reads_out_indices_as_timm():
    info = [{"module": f"m{i}"} for i in range(5)]
    assert select(info, None) == [0, 1, 2, 3, 4]
    assert select(info, 1) == [4]
    assert select(info, 3) == [2, 3, 4]
    assert select(info, (0, -1)) == [0, 4]
    for bad in (0, 6):
        with pytest.raises(ValueError, match="last n levels, 1 <= n <= 5"):
            select(info, bad)
    with pytest.raises(TypeError, match="out_indices"):
        select(info, True)
    with pytest.raises(ValueError, match="twice"):
        select(info, (1, -4))


def test_feature_info_accessors_as_timm():
    model = senet.create_model("se_resnet50", **SMALL50)
    info = model.feature_info
    assert info.channels() == [64, 64, 64, 128, 128]  # idx=None: the selected (here all) levels
    assert info.channels(3) == 128 and info.reduction(3) == 16 and info.module_name(3) == "layer3"
    assert info.channels([0, 4]) == [64, 128] and info.reduction((1, 2)) == [4, 8]
    backbone = senet.create_model("se_resnet50", features_only=True, out_indices=(1, 3), **SMALL50)
    fi = backbone.feature_info
    # As timm's feature networks: every level is described, out_indices picks the returned ones,
    # and an index names a level of the whole network.
    assert len(fi) == 5 and fi.out_indices == (1, 3)
    assert fi.channels() == [64, 128] and fi.reduction() == [4, 16] and fi.module_name() == ["layer1", "layer3"]
    assert fi.module_name(0) == "act1" and fi.get("num_chs", [1, 3]) == [64, 128]
    assert isinstance(fi, FeatureInfo) and fi == info


def test_no_weight_decay_is_the_extra_exemptions():
    model = senet.create_model("se_resnet20")
    assert model.no_weight_decay() == set()


# ----- global_pool and drop_rate on every family ---------------------------------------------

CASES = family_cases()


@pytest.mark.parametrize("name,overrides", CASES, ids=[c[0] for c in CASES])
def test_every_family_takes_global_pool(name, overrides):
    from small_models import small_model

    base = {k: v for k, v in overrides.items() if k != "drop_rate"}
    model, side = small_model(name, {**base, "global_pool": "avgmax", "num_classes": 0})
    x = torch.randn(2, model.in_chans, side, side)
    with torch.no_grad():
        feats = model.pre_logits(model.forward_features(x))
        pooled = model(x)
    want = 0.5 * (F.adaptive_avg_pool2d(feats, 1) + F.adaptive_max_pool2d(feats, 1)).flatten(1)
    torch.testing.assert_close(pooled, want)
    assert pooled.shape == (2, model.head_hidden_size)
    assert model.pretrained_cfg.overrides["global_pool"] == "avgmax"


@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", ""])
def test_global_pool_values_and_shapes(pool):
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", global_pool=pool, num_classes=0 if not pool else 4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
    expected = {"avg": feats.mean((2, 3)), "max": feats.amax((2, 3)),
                "avgmax": 0.5 * (feats.mean((2, 3)) + feats.amax((2, 3))), "": feats}[pool]
    torch.testing.assert_close(pre, expected)
    if pool:
        assert model(x).shape == (2, 4)
    else:
        assert model(x).shape == (2, 64, 8, 8)


def test_global_pool_refusals():
    with pytest.raises(ValueError, match="global_pool=''"):
        senet.create_model("se_resnet20", global_pool="")  # a classifier needs pooled features
    with pytest.raises(ValueError, match="global_pool"):
        senet.create_model("se_resnet20", global_pool="median")


def test_drop_rate_is_dropout_before_the_classifier():
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", drop_rate=0.5)
    assert isinstance(model.head_drop, torch.nn.Dropout) and model.head_drop.p == 0.5
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        feats = model.forward_features(x)
        assert not torch.equal(model.forward_head(feats), model.forward_head(feats))
