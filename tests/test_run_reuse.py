"""A run directory stopped before its first checkpoint is reusable and resumable; stale temporary
files go; a live run and a directory in place of a checkpoint get a clear line."""

import os
import subprocess
import sys

import pytest

from senet.cli import main
from senet.train import NonFiniteLossError, RunDirError, fit
from senet.train.runlock import RunLock, prepare_run_dir, remove_stale_temp_files, results_in

from tiny_run import tiny_config

# A run directory stuck before its first checkpoint, with a config small enough to train in a second.
CONFIG = ("model: {name: se_resnet20, overrides: {layers: [1, 1, 1]}}\ndata: {dataset: 'synthetic:64:3x8x8'}\n"
          "batch_size: 32\neval_batch_size: 32\nepochs: 1\nthreads: 1\n")


def _stuck(path):
    path.mkdir()
    (path / "config.yaml").write_text(CONFIG)
    (path / ".env.json.tmp-1").write_text("{}")  # pid 1 is alive, but only the lock holder writes env.json
    return path


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_resume_of_a_run_without_checkpoint_starts_over_and_says_so(tmp_path, capsys):
    run = _stuck(tmp_path / "r1")
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "no checkpoint yet" in out and "starting the run over" in out
    assert (run / "checkpoints/last_state.pt").is_file() and not list(run.glob(".*.tmp-*"))


def test_new_run_into_a_run_without_checkpoint_needs_no_overwrite(tmp_path, capsys):
    run = _stuck(tmp_path / "r1")
    assert main(["train", "--data", "synthetic:64:3x8x8", "--epochs", "1", "--out", str(run), "--batch-size", "32",
                 "--set", "model.overrides.layers=[1,1,1]", "--threads", "1"]) == 0
    assert (run / "checkpoints/last_state.pt").is_file() and not list(run.glob(".*.tmp-*"))


def test_a_run_diverged_in_its_first_epoch_is_reusable(tmp_path):
    run = tmp_path / "r"
    with pytest.raises(NonFiniteLossError):
        fit(tiny_config("optim.lr=1e30"), run, device="cpu")
    assert "Stopped" in (run / "report.md").read_text() and results_in(run) == []
    fit(tiny_config(), run, device="cpu")  # no overwrite needed
    assert "Stopped" not in (run / "report.md").read_text()
    with pytest.raises(RunDirError, match="not empty"):  # now it holds results: refused as before
        fit(tiny_config(), run, device="cpu")


def test_results_are_still_protected(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch\n1\n")
    with RunLock(run), pytest.raises(RunDirError, match="metrics.csv"):
        prepare_run_dir(run, resume=False, overwrite=False)
    with pytest.raises(RunDirError, match="metrics.csv"):  # nothing to resume, and not only bookkeeping
        fit(tiny_config(), run, device="cpu", resume=True)


def test_stale_temporary_files_of_dead_processes_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    dead, live = _dead_pid(), os.getpid()
    stale = [tmp_path / f".notes.txt.tmp-{dead}", tmp_path / "checkpoints/.last_state.pt.tmp-1",
             tmp_path / ".config.yaml.tmp-1"]
    kept = tmp_path / f".notes.txt.tmp-{live}"  # not a run file, and its writer is alive
    for p in stale + [kept]:
        p.write_text("x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale)
    assert kept.exists() and not any(p.exists() for p in stale)


def test_resume_of_a_live_run_before_its_first_checkpoint_names_the_pid(tmp_path, capsys):
    run = tmp_path / "r"
    with RunLock(run):  # what a run holds while it loads data and builds the model
        assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "in use" in err and f"pid {os.getpid()}" in err and len(err.strip().splitlines()) == 1


def test_resume_without_checkpoint_or_config_says_how_to_start(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and f"--out {run}" in err


def test_a_directory_in_place_of_the_state_file_gets_advice_that_works(tmp_path, capsys):
    run = tmp_path / "r"
    fit(tiny_config(), run, device="cpu", stop_after=2)
    state = run / "checkpoints/last_state.pt"
    state.unlink()
    state.mkdir()
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and f"mv {state} {state}.moved" in err and len(err.strip().splitlines()) == 1
    os.rename(state, f"{state}.moved")  # the advice
    result = fit(tiny_config(), run, device="cpu", resume=True)
    assert len(result.history) == 3 and state.is_file()
