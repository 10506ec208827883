"""timm's model names are accepted wherever a model name is."""

import pytest
import torch

import senet
from senet.cli import main
from senet.models.registry import get_model_spec

TIMM_NAMES = {
    "seresnet50": "se_resnet50", "seresnext50_32x4d": "se_resnext50_32x4d", "legacy_seresnet50": "legacy_se_resnet50",
    "seresnet18": "se_resnet18", "senet154": "senet154", "resnet50": "resnet50", "legacy_senet154": "legacy_senet154",
    "legacy_seresnext50_32x4d": "legacy_se_resnext50_32x4d", "inception_v3": "inception_v3",
    "mobilenetv1_100": "mobilenet_v1", "seresnext101_32x4d": "se_resnext101_32x4d",
    "legacy_seresnet18": "legacy_se_resnet18", "seresnet50.a1_in1k": "se_resnet50",
}


@pytest.mark.parametrize("alias", list(TIMM_NAMES))
def test_timm_names_resolve(alias):
    assert get_model_spec(alias).name == TIMM_NAMES[alias]


def test_create_model_with_alias_is_the_same_network():
    with torch.device("meta"):
        a, b = senet.create_model("seresnet50"), senet.create_model("se_resnet50")
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


def test_list_models_lists_canonical_names_only():
    names = senet.list_models()
    assert "se_resnet50" in names and "seresnet50" not in names and "mobilenetv1_100" not in names


def test_unknown_name_suggests_aliases_too():
    with pytest.raises(KeyError, match="seresnet50"):
        get_model_spec("seresnet05")


def test_cli_models_shows_aliases_and_summary_accepts_them(capsys):
    assert main(["models", "se_resnet5*"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("se_resnet50 "))
    assert "seresnet50" in line
    assert main(["models", "legacy_se_resnet50"]) == 0
    assert "legacy_seresnet50" in capsys.readouterr().out


def test_training_config_accepts_a_timm_name(tmp_path):
    from senet.train import load_config

    cfg = load_config("bundled", ["model.name=seresnet18"])
    assert get_model_spec(cfg.model.name).name == "se_resnet18"


def test_senet_inference_gathers_the_serving_functions():
    import senet.inference as inference
    from senet.deploy import fast, predict
    from senet.deploy import inference as resolving

    assert inference.prepare_for_inference is fast.prepare_for_inference is senet.prepare_for_inference
    assert inference.serving_model is fast.serving_model and inference.predict_paths is predict.predict_paths
    assert inference.resolve_model is resolving.resolve_model
    assert all(hasattr(inference, name) for name in inference.__all__)
