"""The last edges of the boundaries: checks made before work starts, outputs beside the run, an
exported file refused where a network is expected, and the files a diverged resume leaves alone."""

from __future__ import annotations

import pytest
import torch

import senet
import senet.cost.speed as speed
import senet.deploy.export as export_module
import senet.deploy.tuner as tuner
import senet.factory as factory
from senet import create_model
from senet.cli import main
from senet.cli.excitations import default_output
from senet.cost.memory import available_memory, check_models_fit, forward_bytes
from senet.errors import UserInputError
from senet.models.card import card_of
from senet.train import fit, load_config

from tiny_run import tiny_config
from cli_output import one_line as _one_line


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the input size was checked")


@pytest.mark.skipif(available_memory() is None, reason="free memory cannot be read on this system")
def test_benchmark_refuses_an_input_that_cannot_fit_before_any_work(capsys, monkeypatch):
    monkeypatch.setattr(speed, "benchmark", _no_work)
    # 3x20000x20000 at the CPU's batch of 8: the input alone is 38 GiB, a forward pass over 400.
    assert main(["benchmark", "se_resnet20", "--device", "cpu", "--input-size", "3x20000x20000"]) == 2
    line = _one_line(capsys, "input_size 3x20000x20000 needs more than", "GiB for a forward pass at batch 8")
    need = float(line.split("needs more than ")[1].split(" GiB")[0])
    assert need > available_memory() / 2**30


@pytest.mark.skipif(available_memory() is None, reason="free memory cannot be read on this system")
def test_tune_refuses_an_input_that_cannot_fit_before_any_work(capsys, monkeypatch):
    monkeypatch.setattr(tuner, "tune", _no_work)
    assert main(["tune", "se_resnet20", "--input-size", "3x20000x20000", "--batch-size", "4"]) == 2
    _one_line(capsys, "input_size 3x20000x20000 needs more than", "at batch 4")


def test_the_estimate_is_the_input_and_two_of_the_largest_outputs(monkeypatch):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    assert forward_bytes(net, (3, 10, 10), 2) == 4 * (2 * 3 * 100 + 2 * 2 * 8 * 100)
    assert next(net.parameters()).device.type == "cpu" and not net._forward_hooks  # the caller's net untouched
    monkeypatch.setattr("senet.cost.memory.available_memory", lambda device=None: 2**20)
    check_models_fit(["se_resnet20"], (3, 32, 32), 1)  # ~1 MiB of activations: fits
    with pytest.raises(UserInputError, match="input_size 3x256x256 needs more than"):
        check_models_fit(["se_resnet20"], (3, 256, 256), 8)


@pytest.fixture(scope="module")
def se_run(tmp_path_factory):
    """A one-epoch run of a one-block-per-stage SE-ResNet-20 on 64 synthetic images."""
    run = tmp_path_factory.mktemp("se_run") / "run"
    cfg = load_config("bundled", ["model.name=se_resnet20", "model.overrides={layers: [1, 1, 1]}",
                                  "data.dataset=synthetic:64", "epochs=1", "batch_size=32", "eval_batch_size=64",
                                  "data.num_workers=0", "threads=1"])
    fit(cfg, run, device="cpu")
    return run


def test_excitations_write_beside_the_run_not_where_the_command_starts(se_run, tmp_path, capsys, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["excitations", str(se_run / "checkpoints" / "best.safetensors"), "--device", "cpu"]) == 0
    out = se_run / "excitations"
    assert sorted(p.name for p in out.iterdir()) == ["blocks.png", "class_excitations.png", "excitations.json",
                                                     "report.md"]
    assert list(elsewhere.iterdir()) == []
    assert f"wrote {out}: report.md" in capsys.readouterr().out


def test_excitations_default_output_is_the_checkpoints_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert default_output(run) == run / "excitations"
    assert default_output(run / "checkpoints" / "last.safetensors") == run / "excitations"
    assert default_output(tmp_path / "loose.safetensors") == tmp_path / "excitations"  # a file outside a run


def test_excitations_into_a_file_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(factory, "load_model", _no_work)
    taken = tmp_path / "taken"
    taken.write_text("mine")
    assert main(["excitations", str(tmp_path), "--out", str(taken)]) == 2
    _one_line(capsys, f"cannot write into {taken}: it is a file")
    assert taken.read_text() == "mine"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny SE network exported as TorchScript (.pt, with its card) and as a torch.export program."""
    folder = tmp_path_factory.mktemp("exported")
    net = create_model("se_resnet20", layers=[1, 1, 1])
    export_module.export(net, folder / "net.pt", "torchscript", check=False)
    export_module.export(net, folder / "net.pt2", "pt2", check=False)
    return folder


@pytest.mark.parametrize("name, kind", [("net.pt", "a TorchScript archive"), ("net.pt2", "a torch.export program")])
def test_export_refuses_an_exported_file(exported, name, kind, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export_module, "export", _no_work)
    source = exported / name
    before = source.read_bytes()
    out = tmp_path / "again.onnx"
    assert main(["export", str(source), "--out", str(out)]) == 2
    _one_line(capsys, f"{source} is already exported ({kind}); export the checkpoint or model name it was made from")
    assert source.read_bytes() == before and not out.exists()


def test_export_refuses_an_onnx_file_by_its_ending(tmp_path, capsys):
    source = tmp_path / "net.onnx"
    source.write_bytes(b"an ONNX file")
    assert main(["export", str(source), "--out", str(tmp_path / "again.pt2")]) == 2
    _one_line(capsys, f"{source} is already exported (an ONNX file)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]


def test_a_resume_that_diverges_leaves_config_and_checkpoints_byte_identical(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    kept = [run / "config.yaml", *sorted((run / "checkpoints").iterdir())]
    assert [p.name for p in kept] == ["config.yaml", "best.safetensors", "best_state.pt", "last.safetensors",
                                      "last_state.pt"]
    before = {p: p.read_bytes() for p in kept}
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "optim.lr=1e30"]) == 1  # the run's fault, not the user's
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "stopped: loss is nan at epoch 2" in err, err
    assert {p: p.read_bytes() for p in kept} == before  # no checkpoint was made at lr 1e30: nothing says so
    assert sorted((run / "checkpoints").iterdir()) == kept[1:]


def test_a_retrofit_runs_card_is_the_one_retrofit_made(tmp_path):
    spec = "{conv_activations: true, se: {reduction: 16}, init: identity}"  # reduction 16: SEConfig's default
    cfg = load_config("bundled", ["model.name=resnet20", "model.overrides={layers: [1, 1, 1]}",
                                  "data.dataset=synthetic:64", "epochs=1", "batch_size=32", "eval_batch_size=64",
                                  "data.num_workers=0", "threads=1", f"model.retrofit={spec}"])
    result = fit(cfg, None, device="cpu")
    assert card_of(result.model) is result.card
    # what retrofit itself records on a network of the same build, not a hand-made copy of the config
    plain = create_model("resnet20", layers=[1, 1, 1])
    senet.retrofit(plain, conv_activations=True, se=senet.SEConfig(reduction=16), init="identity",
                   input_size=(3, 32, 32))
    assert result.card.retrofit == card_of(plain).retrofit
    assert result.card.retrofit.se == {}  # the defaults, as retrofit writes them (the config repeated one)
