"""Resuming with changed settings: optimiser hyperparameters take effect, the rest is refused up front."""

import json

import pytest
import torch

from senet.cli import main
from senet.train import ConfigError, fit
from senet.train.config import check_resume_changes, config_changes

from tiny_run import tiny_config


def _groups(run):
    return torch.load(run / "checkpoints/last_state.pt", weights_only=True)["optimizer"]["param_groups"]


def test_optimiser_overrides_on_resume_change_the_param_groups(tmp_path):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    assert [(g["weight_decay"], g["momentum"]) for g in _groups(run)] == [(5e-4, 0.9)]
    fit(tiny_config("optim.weight_decay=0.1", "optim.momentum=0.5"), run, device="cpu", resume=True)
    # The optimiser that trained epochs 2-3 had the new settings (saved from its param groups).
    assert [(g["weight_decay"], g["momentum"]) for g in _groups(run)] == [(0.1, 0.5)]
    env = json.loads((run / "env.json").read_text())
    assert env["resumed_after_epoch"] == 1
    assert env["resume_changed"] == {"optim.weight_decay": [5e-4, 0.1], "optim.momentum": [0.9, 0.5]}


def test_resume_without_changes_records_none(tmp_path):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    fit(tiny_config(), run, device="cpu", resume=True)
    assert json.loads((run / "env.json").read_text())["resume_changed"] == {}


@pytest.mark.parametrize("setting, key, was, now", [
    ("optim.name=adam", "optim.name", "sgd", "adam"),
    ("model.name=resnet20", "model.name", "test_rundir_linear", "resnet20"),
    ("model.overrides.se_reduction=4", "model.overrides.se_reduction", "<unset>", "4"),
    ("data.dataset=synthetic:64:3x8x8", "data.dataset", "synthetic:96:3x8x8", "synthetic:64:3x8x8"),
    ("data.image_size=16", "data.image_size", "None", "16"),
    ("optim.decay_norm_and_bias=false", "optim.decay_norm_and_bias", "True", "False"),
])
def test_changes_that_cannot_be_honoured_are_refused_naming_both_values(setting, key, was, now):
    with pytest.raises(ConfigError) as e:
        check_resume_changes(tiny_config(), tiny_config(setting))
    assert f"'{key}'" in str(e.value) and was in str(e.value) and now in str(e.value)


def test_allowed_changes_are_returned():
    changes = check_resume_changes(tiny_config(), tiny_config("epochs=5", "optim.momentum=0.5"))
    assert changes == {"epochs": (3, 5), "optim.momentum": (0.9, 0.5)}
    assert config_changes(tiny_config(), tiny_config()) == {}


def test_cli_refuses_another_optimiser_or_model_in_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    before = (run / "checkpoints/last_state.pt").read_bytes()
    for argv, key in ((["--set", "optim.name=adam"], "optim.name"), (["--model", "resnet56"], "model.name")):
        assert main(["train", "--resume", str(run), *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and f"'{key}'" in err and "Traceback" not in err, err
    assert (run / "checkpoints/last_state.pt").read_bytes() == before  # nothing was touched
