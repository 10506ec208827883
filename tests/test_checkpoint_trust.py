"""Unverified checkpoints load only with a warning naming them and never replace a verifying file;
files that are not senet checkpoints are named for what they are, in one line."""

import json
import logging
import pickle
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, safe_open, save_file

import senet
from senet.cli import main
from senet.train import fit
from senet.train.reconcile import load_resume_state, reconcile_run_dir
from senet.factory import load_checkpoint
from senet.weights.checkpoint import CheckpointError, load_state, read_weights_file

from tiny_run import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("trust") / "run"
    fit(tiny_config("epochs=2"), run, device="cpu")
    return run


def _strip_hash_and_zero(src, dst):
    """The weights file with its hash key renamed and every weight set to zero."""
    with safe_open(str(src), "pt") as f:
        metadata = f.metadata()
    tensors = {k: torch.zeros_like(v) for k, v in load_file(str(src)).items()}
    metadata["renamed_sha256"] = metadata.pop("senet_sha256")
    save_file(tensors, str(dst), metadata=metadata)


def test_an_unhashed_state_never_overwrites_verifying_weights(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state_path, weights = copy / "checkpoints/last_state.pt", copy / "checkpoints/last.safetensors"
    state = torch.load(state_path, weights_only=True)
    del state["sha256"]
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}
    torch.save(state, state_path)
    intact = weights.read_bytes()

    loaded, tag, notes = load_resume_state(copy)
    assert tag == "last" and loaded["unverified"]
    assert any("warning" in n and str(state_path) in n and "no content hash" in n for n in notes)
    notes = reconcile_run_dir(copy, loaded, tag)
    assert any("kept last.safetensors" in n and "unverified" in n for n in notes)
    assert weights.read_bytes() == intact and read_weights_file(weights)[2]
    # A resume with nothing left to train says so and leaves the verified weights as they were.
    fit(tiny_config("epochs=2"), copy, device="cpu", resume=True)
    assert weights.read_bytes() == intact


def test_a_state_with_its_hash_still_overwrites_stale_weights(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "checkpoints/last.safetensors"
    weights.write_bytes(b"")
    state, tag, _ = load_resume_state(copy)
    assert "unverified" not in state
    assert any("rewrote checkpoints/last.safetensors" in n for n in reconcile_run_dir(copy, state, tag))
    assert read_weights_file(weights)[2]


def test_eval_names_an_unverified_file_and_says_it_is_not_verified(run, tmp_path, caplog, capsys):
    edited = tmp_path / "edited.safetensors"
    _strip_hash_and_zero(run / "checkpoints/best.safetensors", edited)
    with caplog.at_level(logging.WARNING):
        ckpt = load_checkpoint(edited)
    assert not ckpt.verified and str(edited) in caplog.text and "not verified" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["eval", "--checkpoint", str(edited)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {edited} (NOT verified" in out and str(edited) in caplog.text
    assert main(["eval", "--checkpoint", str(run)]) == 0
    assert f"checkpoint: {run / 'checkpoints/best.safetensors'} (verified)" in capsys.readouterr().out


class Foreign:
    """A class of some other program, pickled into a file."""

    def __init__(self):
        self.x = 1


@pytest.fixture
def foreign_files(tmp_path):
    model = senet.create_model("se_resnet20", layers=(1, 1, 1))
    files = {}
    files["plain"] = tmp_path / "plain.pt"
    torch.save(model.state_dict(), files["plain"])
    files["objects"] = tmp_path / "objects.pt"
    torch.save({"net": Foreign()}, files["objects"])
    files["legacy"] = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), files["legacy"], _use_new_zipfile_serialization=False)
    files["pickle"] = tmp_path / "foreign.pkl"
    files["pickle"].write_bytes(pickle.dumps(Foreign(), protocol=4))
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    return files, tmp_path / "x.png"


@pytest.mark.parametrize("kind, said", [("plain", "is a PyTorch file that is not a senet checkpoint"),
                                        ("objects", "is a PyTorch file that is not a senet checkpoint"),
                                        ("legacy", "is a Python pickle"), ("pickle", "is a Python pickle")])
def test_foreign_files_are_named_for_what_they_are(foreign_files, kind, said, capsys, recwarn, tmp_path):
    files, image = foreign_files
    path = files[kind]
    for argv in (["eval", "--checkpoint", str(path)], ["predict", str(path), str(image)],
                 ["export", str(path), "--out", str(tmp_path / "m.onnx")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err and said in err, (argv, err)
        assert "truncated" not in err and "damaged" not in err and "weights_only" not in err
    assert not [w for w in recwarn if "site-packages" in str(w.message) or w.category is UserWarning]


def test_a_foreign_state_file_is_not_unpickled_nor_called_damaged(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"epoch": 1, "model": Foreign()}, tmp_path / "checkpoints/last_state.pt")
    with pytest.raises(CheckpointError) as e:
        load_state(tmp_path)
    assert "objects other than tensors" in str(e.value) and "weights_only" not in str(e.value)
    assert "damaged" not in str(e.value)


def test_no_torch_warning_leaks_from_the_command_line(foreign_files):
    files, image = foreign_files
    done = subprocess.run([sys.executable, "-m", "senet.cli", "predict", str(files["legacy"]), str(image)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "site-packages" not in done.stderr and "Warning" not in done.stderr
