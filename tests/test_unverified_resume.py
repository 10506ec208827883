"""What is rebuilt from a state without a content hash stays unverified and never replaces a file
that verifies; a resume records every change it accepts and refuses one that would not be used."""

import shutil

import pytest
import torch
import yaml

from senet.cli import main
from senet.train import fit
from senet.weights.checkpoint import read_weights_file

from tiny_run import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("unverified")
    one, two = root / "one", root / "two"
    fit(tiny_config("epochs=1"), one, device="cpu")
    fit(tiny_config("epochs=2"), two, device="cpu")
    return one, two


def _edited_run(runs, tmp_path):
    """A copy of the 2-epoch run whose best checkpoint is a genuine, verifying epoch 1, and whose
    last_state.pt was edited: hash removed, weights zeroed, history saying epoch 2 is the best."""
    one, two = runs
    copy = tmp_path / "run"
    shutil.copytree(two, copy)
    for name in ("best_state.pt", "best.safetensors"):
        shutil.copy(one / "checkpoints" / name, copy / "checkpoints" / name)
    state_path = copy / "checkpoints/last_state.pt"
    state = torch.load(state_path, weights_only=True)
    del state["sha256"]
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    state["history"][0]["top1_err"], state["history"][1]["top1_err"] = 90.0, 0.0
    torch.save(state, state_path)
    (copy / "checkpoints/last.safetensors").unlink()
    return copy


def test_an_unverified_state_does_not_launder_into_verified_files(runs, tmp_path, capsys):
    copy = _edited_run(runs, tmp_path)
    best = {n: (copy / "checkpoints" / n).read_bytes() for n in ("best_state.pt", "best.safetensors")}
    fit(tiny_config("epochs=2"), copy, device="cpu", resume=True)  # nothing left to train: reconcile only
    # the verified best checkpoint is kept, byte for byte
    assert {n: (copy / "checkpoints" / n).read_bytes() for n in best} == best
    # the weights rebuilt from the edited state carry no hash: they stay unverified
    tensors, _, verified = read_weights_file(copy / "checkpoints/last.safetensors")
    assert not verified and all(float(t.abs().sum()) == 0 for t in tensors.values())
    capsys.readouterr()
    assert main(["eval", str(copy / "checkpoints/last.safetensors")]) == 0
    assert "NOT verified" in capsys.readouterr().out


def _config(run):
    return yaml.safe_load((run / "config.yaml").read_text())


def test_every_accepted_resume_change_is_announced_and_recorded(tmp_path, capsys):
    import json

    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    capsys.readouterr()
    fit(tiny_config("optim.lr=0.02", "grad_clip=1.0"), run, device="cpu", resume=True)
    out = capsys.readouterr()
    said = out.out + out.err
    assert "resuming with changed settings: optim.lr 0.05 -> 0.02; grad_clip" in said
    recorded = json.loads((run / "env.json").read_text())["resume_changed"]
    assert recorded["optim.lr"] == [0.05, 0.02] and recorded["grad_clip"][1] == 1.0
    assert _config(run)["optim"]["lr"] == 0.02  # checkpoints were made with it: config.yaml says so


def test_a_resume_that_makes_no_checkpoint_leaves_config_yaml(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu")  # all 3 epochs
    before = (run / "config.yaml").read_bytes()
    capsys.readouterr()
    fit(tiny_config("optim.lr=1000000.0"), run, device="cpu", resume=True)  # nothing left to train
    out = capsys.readouterr()
    assert "nothing to train" in out.out + out.err
    assert (run / "config.yaml").read_bytes() == before  # no checkpoint was made with lr=1e6


def test_a_resume_change_that_would_not_be_used_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["train", "--resume", str(run), "--set", "model.weights=elsewhere.pth"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'model.weights' would not be used on resume" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_resuming_with_fewer_epochs_is_refused_before_any_file_changes(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=2)
    (run / "metrics.csv").write_text("stale\n")  # a resume would repair it: a refused one must not
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2
    assert "already trained 2 epochs" in capsys.readouterr().err
    assert (run / "metrics.csv").read_text() == "stale\n"


def test_an_unhashed_state_missing_a_key_is_named_not_a_bug(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    for tag in ("last", "best"):
        path = run / f"checkpoints/{tag}_state.pt"
        state = torch.load(path, weights_only=True)
        del state["sha256"], state["optimizer"]
        torch.save(state, path)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "internal error" not in err
    assert "last_state.pt is not a complete trainer state: it lacks optimizer" in err


def test_a_run_file_that_became_a_directory_is_named_with_a_hint_that_works(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=1)
    config = run / "config.yaml"
    text = config.read_text()
    config.unlink()
    config.mkdir()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{config} is a directory where the run keeps its config.yaml" in err
    assert f"mv {config} {config}.moved" in err
    config.rename(run / "config.yaml.moved")  # the hint, followed
    assert main(["train", "--resume", str(run)]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text()) == yaml.safe_load(text)
