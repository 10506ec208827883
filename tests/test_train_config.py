"""TrainConfig: recipes, overrides parsed with the field's type, unknown keys and wrong types named."""

import pytest

from senet.cli import main
from senet.models.registry import get_model_spec
from senet.train import (ConfigError, TrainConfig, apply_overrides, config_from_dict, dump_config, list_recipes,
                         load_config, load_recipe)


def test_every_shipped_recipe_loads_names_its_source_and_a_registered_model():
    names = list_recipes()
    assert {"bundled", "imagenet_se_resnet50", "cifar10_se_preact_resnet110", "cifar100_se_preact_resnet164",
            "cifar10_se_wrn16_8", "adam_scratch", "rmsprop_transfer"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert len(cfg.source) > 40, name
        get_model_spec(cfg.model.name)  # raises if not registered


def test_imagenet_recipe_is_the_paper_setting():
    cfg = load_config("imagenet_se_resnet50")
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.lr, cfg.optim.weight_decay) == ("sgd", 0.9, 0.6, 1e-4)
    assert (cfg.batch_size, cfg.epochs, cfg.schedule.name, cfg.schedule.step_size, cfg.schedule.gamma) == \
        (1024, 100, "step", 30, 0.1)
    assert cfg.model.overrides == {"se_reduction": 16}
    seed3 = load_config("adam_scratch"), load_config("rmsprop_transfer")
    assert [(c.optim.name, c.optim.lr) for c in seed3] == [("adam", 1e-3), ("rmsprop", 1e-5)]


def test_overrides_are_parsed_with_the_field_type():
    cfg = apply_overrides(TrainConfig(), ["optim.lr=0.05", "optim.nesterov=false", "epochs=3",
                                          "schedule.milestones=[2, 4]", "model.overrides.se_reduction=8",
                                          "model.overrides.se_stages=[1, 2]", "data.root=null", "data.dataset=123"])
    assert cfg.optim.lr == 0.05 and cfg.optim.nesterov is False and cfg.epochs == 3
    assert cfg.schedule.milestones == (2, 4)
    assert cfg.model.overrides == {"se_reduction": 8, "se_stages": [1, 2]}
    assert cfg.data.root is None and cfg.data.dataset == "123"  # str fields keep the text
    assert isinstance(apply_overrides(cfg, ["optim.lr=1"]).optim.lr, float)  # int accepted for float
    assert apply_overrides(cfg, ["optim.lr=1e-3"]).optim.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string
    assert config_from_dict({"optim": {"weight_decay": "5e-4"}}).optim.weight_decay == 5e-4


def test_unknown_key_names_it_and_the_closest_match():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'.*'optim.lr'"):
        apply_overrides(TrainConfig(), ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"'epoch'.*'epochs'"):
        config_from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides(TrainConfig(), ["epochs"])


@pytest.mark.parametrize("item, expected", [("epochs=abc", "int"), ("epochs=1.5", "int"),
                                            ("optim.nesterov=maybe", "bool"), ("optim.lr=fast", "float"),
                                            ("schedule.milestones=[a]", "int"), ("optim", "key=value")])
def test_wrong_type_names_the_key_and_expected_type(item, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        apply_overrides(TrainConfig(), [item])
    assert item.split("=")[0].split(".")[0] in str(info.value)


def test_yaml_round_trip(tmp_path):
    cfg = load_config("cifar10_se_wrn16_8", ["model.overrides.se_reduction=4"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert config_from_dict(load_recipe(str(path))) == cfg


def test_unknown_recipe_lists_shipped_ones():
    with pytest.raises(FileNotFoundError, match="bundled"):
        load_recipe("bundle")


def test_cli_bad_config_is_one_line_naming_the_key(capsys, tmp_path):
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "optim.momentun=0.5"]) == 2
    err = capsys.readouterr().err
    assert "optim.momentun" in err and "optim.momentum" in err and "Traceback" not in err
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "batch_size=big"]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
