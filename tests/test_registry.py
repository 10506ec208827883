"""Registry behaviour and error messages."""

import pytest
import torch
from torch import nn

import senet
from senet.models.registry import UnknownModelError


def test_list_models_pattern():
    names = senet.list_models()
    assert names == sorted(names)
    assert "se_resnet50" in names and "resnet20" in names and "legacy_senet154" in names
    se = senet.list_models("se_resnet*")
    assert se and all(n.startswith("se_resnet") for n in se)
    assert senet.list_models("no_such_*") == []


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownModelError, match="se_resnet50"):
        senet.create_model("se_resnet5")  # (timm's "seresnet50" is an alias, tests/test_aliases.py)


def test_unknown_override_names_argument():
    with pytest.raises(TypeError, match=r"'num_class'.*num_classes"):
        senet.create_model("resnet20", num_class=7)


def test_se_override_on_plain_model_is_refused():
    with pytest.raises(ValueError, match="has no SE blocks"):
        senet.create_model("resnet20", se_reduction=4)


def test_bad_se_override_values_fail_with_allowed_values():
    with pytest.raises(ValueError, match="se.gate"):
        senet.create_model("se_resnet20", se_gate="softmax")
    with pytest.raises(ValueError, match="fewer than 1 channel"):
        senet.create_model("se_resnet20", se_reduction=32)  # 16 channels / 32
    with pytest.raises(ValueError, match="se.stages"):
        senet.create_model("se_resnet20", se_stages=(4,))
    with pytest.raises(TypeError, match="SEConfig"):
        senet.create_model("se_resnet20", se={"reduction": 4})


def test_bad_architecture_values():
    with pytest.raises(ValueError, match="block="):
        senet.create_model("resnet20", block="basik")
    with pytest.raises(ValueError, match="num_classes"):
        senet.create_model("resnet20", num_classes=-1)  # 0 is timm's "no classifier"
    with pytest.raises(ValueError, match=r"down_kernel=2 .*allowed values: 1, 3"):  # integer choices
        senet.create_model("resnet20", down_kernel=2)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        senet.register_model("resnet50", nn.Linear, family="x", description="dup", in_features=1, out_features=1)


def test_user_registered_model_works_with_tools():
    from senet.models.registry import unregister_model

    name = "test_tiny_user_net"
    senet.register_model(name, senet.models.ResNet, family="user", description="user net",
                         block="basic", layers=(1, 1), widths=(8, 16), stem="cifar", stem_width=8,
                         se=senet.SEConfig(reduction=4), num_classes=3, aliases=("tinyusernet",))
    try:
        model = senet.create_model(name, num_classes=5)
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
        assert senet.complexity(model, (3, 16, 16)).se_blocks == 2
    finally:
        assert unregister_model("tinyusernet").name == name  # by any of its names
    assert name not in senet.list_models() and not senet.list_models("tinyusernet")
    with pytest.raises(UnknownModelError):
        senet.create_model(name)
    with pytest.raises(ValueError):  # defaults are validated at registration
        senet.register_model("test_bad_defaults", senet.models.ResNet, family="user", description="bad",
                             block="basic", layers=(1,), bogus=1)
    assert "test_bad_defaults" not in senet.list_models()


def test_se_field_overrides():
    m = senet.create_model("se_resnet20", se_reduction=4, se_gate="tanh", se_squeeze="max", se_fc="linear")
    se = [x for x in m.modules() if isinstance(x, senet.SqueezeExcite)]
    assert len(se) == 9
    assert se[0].width == 4 and isinstance(se[0].gate, nn.Tanh) and isinstance(se[0].squeeze, nn.AdaptiveMaxPool2d)
    assert isinstance(se[0].fc1, nn.Linear)


def test_spec_metadata():
    spec = senet.get_model_spec("se_resnet50")
    assert spec.has_se and spec.family == "resnet" and spec.description
    assert not senet.get_model_spec("resnet50").has_se


def test_list_models_matches_timm_names_tags_and_modules():
    # timm's names select ours: "seresnet*" finds the se_resnet* networks, not the plain ones
    found = senet.list_models("seresnet*")
    assert "se_resnet50" in found and "resnet50" not in found
    assert set(senet.list_models(["seresnet50", "resnet20"])) == {"se_resnet50", "resnet20"}
    # pretrained=True lists each set of published weights as name.tag, a name create_model accepts
    tagged = senet.list_models("seresnet50*", pretrained=True)
    assert {"se_resnet50.a1_in1k", "se_resnet50.ra2_in1k"} <= set(tagged)
    assert senet.list_models("seresnet50.a3*", pretrained=True) == ["se_resnet50.a3_in1k"]
    assert senet.list_models("se_resnet50", pretrained=True, include_tags=False) == ["se_resnet50"]
    assert "se_resnet20" not in senet.list_models(pretrained=True, include_tags=False)
    assert senet.list_pretrained() == senet.list_models(pretrained=True)
    assert senet.get_model_spec(tagged[0]).name == "se_resnet50"
    # module (timm's word) and family select the same group; exclude_filters removes matches
    cifar = senet.list_models(module="cifar")
    assert cifar == senet.list_models(family="cifar") and "resnet20" in cifar
    no_wide = senet.list_models(module="cifar", exclude_filters=["*wrn*", "*preact*"])
    assert "resnet20" in no_wide and not any("wrn" in n or "preact" in n for n in no_wide)


def test_loading_another_networks_file_names_both_in_one_line(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "seresnet50.safetensors"
    with torch.device("meta"):
        shapes = senet.create_model("se_resnet50").state_dict()
    save_file({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}, path)
    model = senet.create_model("se_resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with _no_warnings():
        with pytest.raises(senet.WeightLoadError) as err:
            senet.create_model("se_resnet20", pretrained=path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "holds se_resnet50" in msg and "timm layout" in msg and "the model is se_resnet20" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_layout_detection():
    from senet.weights.identify import detect_layout

    assert detect_layout({"layer0.conv1.weight": 0, "last_linear.weight": 0}) == "legacy"
    assert detect_layout({"conv1.weight": 0, "fc.weight": 0}) == "timm"
    assert detect_layout({"conv1.weight": 0}, {"senet": "{}"}) == "senet"


class _no_warnings:
    """Fails the test if any warning (e.g. a premature "loaded ..." message) is issued inside."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings(record=True)
        self._log = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        assert not [str(w.message) for w in self._log]
        return False
