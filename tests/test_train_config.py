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


# --- every field checked when the config is built ----------------------------

@pytest.mark.parametrize("item, expected", [
    ("save_every=0", ">= 1"), ("schedule.step_size=0", ">= 1"), ("label_smoothing=2", r"in \[0, 1\)"),
    ("label_smoothing=1", r"in \[0, 1\)"), ("label_smoothing=-0.1", r"in \[0, 1\)"), ("epochs=0", ">= 1"),
    ("epochs=-3", ">= 1"), ("optim.weight_decay=-1e-4", ">= 0"), ("schedule.warmup_epochs=-1", ">= 0"),
    ("grad_clip=-1", ">= 0"), ("eval_batch_size=0", ">= 1"), ("batch_size=0", ">= 1"),
    ("data.image_size=0", ">= 1 or null"), ("optim.lr=-0.1", ">= 0"),
    ("optim.lr=.inf", ">= 0"), ("optim.lr=.nan", ">= 0"), ("optim.momentum=1", r"in \[0, 1\)"),
    ("optim.momentum=-0.5", r"in \[0, 1\)"), ("optim.betas=[0.9,1.5]", r"each in \[0, 1\)"),
    ("optim.eps=0", "> 0"), ("optim.alpha=2", r"in \[0, 1\]"), ("schedule.gamma=0", "> 0"),
    ("schedule.milestones=[60,30]", "increasing"), ("schedule.milestones=[0,30]", "increasing"),
    ("schedule.min_lr=-1", ">= 0"), ("schedule.warmup_start_factor=1.5", r"in \[0, 1\]"),
    ("data.num_workers=-1", ">= 0"), ("data.crop_padding=-4", ">= 0"), ("data.cutout=-1", ">= 0"),
    ("seed=-1", r"in \[0, 2\*\*63\)"), ("model.overrides.num_classes=0", "num_classes"), ("model.name=", "non-empty"),
    ("data.dataset=", "non-empty"),
    ("optim.name=sgdd", "'sgd'"), ("schedule.name=cosin", "'cosine'"), ("precision=fp8", "'bf16'"),
    ("data.on_corrupt=ignore", "'warn', 'error'"), ("data.empty_classes=skip", "'warn', 'error'"),
    ("model.weights_source=caffe", "'legacy'"),
])
def test_out_of_range_values_name_the_key_and_the_allowed_range(item, expected):
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=expected) as info:
        apply_overrides(TrainConfig(), [item])
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError):  # the same from a recipe's mapping
        nested = {}
        *parents, leaf = key.split(".")
        here = nested
        for p in parents:
            here = here.setdefault(p, {})
        import yaml
        here[leaf] = yaml.safe_load(item.split("=", 1)[1]) if item.split("=", 1)[1] else ""
        config_from_dict(nested)


def test_constructing_or_replacing_a_config_checks_it():
    from senet.train import DataConfig, OptimConfig, ScheduleConfig

    with pytest.raises(ConfigError, match="'save_every' must be >= 1"):
        TrainConfig(save_every=0)
    with pytest.raises(ConfigError, match="'epochs' expects int"):
        TrainConfig(epochs="3")
    with pytest.raises(ConfigError, match="'schedule.step_size'"):
        ScheduleConfig(step_size=0)
    with pytest.raises(ConfigError, match="'data.image_size'"):
        DataConfig(image_size=0)
    with pytest.raises(ConfigError, match="'epochs'"):
        TrainConfig().replace(epochs=0)
    with pytest.raises(ConfigError, match="'optim' is a section"):
        TrainConfig(optim={"lr": 0.1})
    opt = OptimConfig(lr=1, betas=[0.5, 0.6])  # ints and lists become the field's type
    assert isinstance(opt.lr, float) and opt.betas == (0.5, 0.6)
    assert DataConfig(image_size=None).image_size is None


def test_check_config_catches_later_assignments():
    from senet.train.config import check_config

    cfg = TrainConfig()
    assert check_config(cfg) is cfg
    cfg.schedule.step_size = 0
    with pytest.raises(ConfigError, match="'schedule.step_size'"):
        check_config(cfg)


def test_fit_refuses_a_bad_config_before_any_work(tmp_path):
    from senet.train import fit

    cfg = TrainConfig()
    cfg.save_every = 0  # assigned after construction: fit checks again
    with pytest.raises(ConfigError, match="'save_every'"):
        fit(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_every_numeric_field_has_a_rule():
    import dataclasses
    import typing

    from senet.train.coerce import fields as _fields
    from senet.train.config import RULES

    def numeric(tp):
        return tp in (int, float) or any(numeric(a) for a in typing.get_args(tp) if a is not Ellipsis)

    def keys(cls, prefix=""):
        for name, tp in _fields(cls).items():
            if dataclasses.is_dataclass(tp):
                yield from keys(tp, f"{prefix}{name}.")
            else:
                yield prefix + name, tp

    fields = dict(keys(TrainConfig))
    missing = [k for k, tp in fields.items() if numeric(tp) and k not in RULES]
    assert not missing, f"numeric config fields without a range rule: {missing}"
    assert set(RULES) <= set(fields)  # a rule for a field that does not exist is a typo


def test_rules_between_fields_are_checked_after_all_overrides():
    cfg = load_config("bundled")  # nesterov: true
    assert cfg.optim.nesterov
    with pytest.raises(ConfigError, match="'optim.nesterov' needs"):
        apply_overrides(cfg, ["optim.momentum=0"])
    # The order of overrides does not matter: only the final config is judged.
    assert apply_overrides(cfg, ["optim.momentum=0", "optim.nesterov=false"]).optim.momentum == 0


def test_binary_or_broken_recipe_file_is_named(tmp_path):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="weights.yaml.*not a YAML text file"):
        load_config(str(binary))
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML") as info:
        load_recipe(str(broken))
    assert "\n" not in str(info.value)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="list.yaml.*mapping"):
        load_config(str(listing))


def test_num_classes_that_disagree_with_the_data_are_refused():
    from senet.data import load_dataset
    from senet.train import build_model

    data = load_dataset("synthetic:64:3x16x16", "train")
    cfg = apply_overrides(TrainConfig(), ["model.overrides.num_classes=3"])
    with pytest.raises(ConfigError, match=rf"num_classes' is 3 but the dataset has {len(data.classes)} classes"):
        build_model(cfg, data)
    cfg = apply_overrides(TrainConfig(), ["model.overrides.in_chans=1"])
    with pytest.raises(ConfigError, match="in_chans' is 1 but the dataset has 3 image channels"):
        build_model(cfg, data)
    agreeing = apply_overrides(TrainConfig(), [f"model.overrides.num_classes={len(data.classes)}"])
    assert build_model(agreeing, data)[1].overrides["num_classes"] == len(data.classes)
