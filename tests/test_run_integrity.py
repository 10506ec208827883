"""Checksummed checkpoints with fallback, the run-directory lock, --overwrite, OS errors."""

import errno
import logging
import os
import struct

import pytest
import torch
from torch import nn

from senet.cli import main
from senet.train import CheckpointError, RunDirError, fit, load_checkpoint  # the public names users catch
from senet.models.card import ModelCard
from senet.weights.checkpoint import CheckpointMeta, load_state, read_weights, save_checkpoint
from senet.train.reconcile import load_resume_state
from senet.train.runlock import RunLock

from tiny_run import NAME, tiny_config, untimed


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight")
    return run, fit(tiny_config(), run, device="cpu")


def _small_checkpoint(tmp_path):
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.fill_(1.5)  # a byte pattern to find and flip in the files
    save_checkpoint(tmp_path, "last", model, CheckpointMeta(ModelCard("x").to_dict(), 1), {"epoch": 1, "history": []})
    return tmp_path / "checkpoints"


def _flip_pattern(path):
    data = bytearray(path.read_bytes())
    at = bytes(data).index(struct.pack("<f", 1.5) * 4)
    for k in (1, 5, 9):  # three flipped bytes inside the weights
        data[at + k] ^= 0x10
    path.write_bytes(bytes(data))


def test_checksums_catch_flipped_bytes_and_damaged_files(tmp_path):
    ckpt = _small_checkpoint(tmp_path)
    assert load_state(tmp_path)["epoch"] == 1 and read_weights(ckpt / "last.safetensors")[1].epoch == 1
    for name in ("last_state.pt", "last.safetensors"):
        good = (ckpt / name).read_bytes()
        _flip_pattern(ckpt / name)
        with pytest.raises(CheckpointError, match=f"{name} fails its checksum"):
            load_state(tmp_path) if name.endswith(".pt") else read_weights(ckpt / name)
        for bad, problem in ((b"", "is empty"), (good[: len(good) // 2], "is truncated"),
                             (b"garbage " * 50, "is not a checkpoint")):
            (ckpt / name).write_bytes(bad)
            with pytest.raises(CheckpointError, match=f"{name} {problem}"):
                load_state(tmp_path) if name.endswith(".pt") else read_weights(ckpt / name)
        (ckpt / name).write_bytes(good)


def test_checkpoints_without_a_hash_still_load(tmp_path):
    ckpt = _small_checkpoint(tmp_path)
    state = torch.load(ckpt / "last_state.pt", weights_only=True)
    del state["sha256"]
    torch.save(state, ckpt / "last_state.pt")
    assert load_state(tmp_path)["epoch"] == 1


def test_resume_falls_back_to_best_and_eval_falls_back_to_last(straight, tmp_path, caplog, capsys):
    ref, result = straight
    run = tmp_path / "run"
    fit(tiny_config(), run, device="cpu", stop_after=2)
    (run / "checkpoints/last_state.pt").write_bytes(b"")
    state, tag, notes = load_resume_state(run)
    assert tag == "best" and "last_state.pt is empty; resuming from best_state.pt (epoch 2)" in notes[0]
    resumed = fit(tiny_config(), run, device="cpu", resume=True)
    assert untimed(resumed.history) == untimed(result.history)
    a, b = read_weights(ref / "checkpoints/last.safetensors")[0], read_weights(run / "checkpoints/last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)

    (run / "checkpoints/best.safetensors").write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING):
        ckpt = load_checkpoint(run)
    assert ckpt.meta.epoch == 3 and ckpt.path.name == "last.safetensors" and ckpt.verified
    assert "best.safetensors is not a checkpoint" in caplog.text and "last" in caplog.text
    assert main(["eval", "--checkpoint", str(run)]) == 0
    assert "top-1 error" in capsys.readouterr().out
    (run / "checkpoints/last.safetensors").write_bytes(b"")
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")  # a real image, so the checkpoint is what fails
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.safetensors"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.safetensors is empty" in err


def test_run_directory_is_locked_and_not_overwritten(straight, tmp_path, capsys):
    ref, _ = straight
    with RunLock(tmp_path / "busy"):
        with pytest.raises(RunDirError, match=rf"in use by another senet process \(pid {os.getpid()}\)"):
            fit(tiny_config(), tmp_path / "busy", device="cpu")
    with RunLock(ref):
        assert main(["train", "--resume", str(ref)]) == 2
        assert "in use by another senet process" in capsys.readouterr().err
    assert main(["train", "--config", "bundled", "--set", f"model.name={NAME}", "--set", "model.overrides={}",
                 "--data", "synthetic:96:3x8x8", "--epochs", "1", "--out", str(ref)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err
    before = (ref / "checkpoints/last.safetensors").read_bytes()
    run = tmp_path / "again"
    fit(tiny_config("epochs=1"), run, device="cpu")
    fit(tiny_config("epochs=1", "seed=5"), run, device="cpu", overwrite=True)
    assert load_state(run)["config"]["seed"] == 5
    assert (ref / "checkpoints/last.safetensors").read_bytes() == before


def test_os_errors_are_one_line_and_keep_the_run_resumable(straight, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("x")
    base = ["train", "--set", f"model.name={NAME}", "--set", "model.overrides={}", "--data", "synthetic:96:3x8x8",
            "--epochs", "3", "--batch-size", "32", "--set", "eval_batch_size=50", "--lr", "0.05",
            "--set", "schedule.name=cosine", "--threads", "1"]  # as tiny_config
    assert main([*base, "--out", str(afile)]) == 2
    assert "is an existing file, not a directory" in capsys.readouterr().err
    assert main([*base, "--out", str(afile / "run")]) == 2
    assert "not a directory" in capsys.readouterr().err

    # A full disk while writing epoch 2's metrics: ENOSPC from the write, which names no file.
    import senet.train.rundir as rundir

    real_write, real_fsync, calls = rundir.atomic_write_bytes, os.fsync, []

    def fsync_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(path, data):
        calls.append(path.name)
        if calls.count("metrics.csv") == 2:
            monkeypatch.setattr(os, "fsync", fsync_full)
        try:
            real_write(path, data)
        finally:
            monkeypatch.setattr(os, "fsync", real_fsync)

    monkeypatch.setattr(rundir, "atomic_write_bytes", write)
    run = tmp_path / "full"
    assert main([*base, "--out", str(run)]) == 1  # the machine's failure, not the input's
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {run / 'metrics.csv'}: no space left on the device" in err
    assert f"resume with: senet train --resume {run}" in err
    monkeypatch.setattr(rundir, "atomic_write_bytes", real_write)
    assert load_state(run)["epoch"] == 2
    ref, result = straight
    resumed = fit(tiny_config(), run, device="cpu", resume=True)
    assert untimed(resumed.history) == untimed(result.history)
