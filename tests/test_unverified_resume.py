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
