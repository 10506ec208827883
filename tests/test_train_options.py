"""fit() for a new user: progress by default, --threads, --tensorboard, resuming with fewer epochs."""

import json
import sys

import pytest
import torch

from senet.cli import main
from senet.train import Reporter, fit, load_config
from senet.train.rundir import METRIC_COLUMNS
from senet.train.threads import intra_op_threads

TINY = ["model.overrides.layers=[1,1,1]", "data.dataset=synthetic:64:3x8x8", "batch_size=16", "eval_batch_size=16",
        "data.num_workers=0"]
TINY_CLI = ["--model", "se_resnet20", "--data", "synthetic:64:3x8x8", "--batch-size", "16",
            "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=16"]


def test_fit_prints_progress_by_default_and_reporter_silences_it(capsys):
    cfg = load_config("bundled", [*TINY, "epochs=1"])
    fit(cfg, None)
    out = capsys.readouterr().out
    assert "training se_resnet20" in out and "epoch   1/1" in out and "final: top-1 error" in out
    fit(cfg, None, reporter=Reporter())
    assert capsys.readouterr().out == ""


class ThreadProbe(Reporter):
    def start(self, info):
        self.threads = torch.get_num_threads()


def test_threads_applied_recorded_and_restored(tmp_path):
    before = torch.get_num_threads()
    want = 2 if before == 1 else 1
    probe = ThreadProbe()
    fit(load_config("bundled", [*TINY, "epochs=1", f"threads={want}"]), tmp_path / "run", reporter=probe)
    assert probe.threads == want
    assert torch.get_num_threads() == before  # fit leaves torch's setting as it found it
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["torch_threads"] == want and env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"threads: {want}" in (tmp_path / "run" / "config.yaml").read_text()

    with pytest.raises(ValueError, match="'threads' must be >= 0"):
        fit(load_config("bundled", [*TINY, "threads=-1"]), None, reporter=Reporter())
    with intra_op_threads(0) as n:  # 0 keeps torch's default
        assert n == before


def test_cli_threads_option(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_CLI, "--epochs", "1", "--threads", "1", "--out", str(run)]) == 0
    assert "threads: 1" in (run / "config.yaml").read_text()
    assert json.loads((run / "env.json").read_text())["torch_threads"] == 1


def test_resume_with_fewer_epochs_is_refused_and_more_extend(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_CLI, "--epochs", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "already trained 2 epochs" in err and "epochs=1" in err and len(err.strip().splitlines()) == 1
    assert "epochs: 2" in (run / "config.yaml").read_text()  # nothing rewritten
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def _scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_the_metrics_csv_scalars_and_resumes(tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    cfg = load_config("bundled", [*TINY, "epochs=3", "tensorboard=true"])
    fit(cfg, run, stop_after=2, reporter=Reporter())  # interrupted after epoch 2
    fit(cfg, run, resume=True, reporter=Reporter())
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scalars = _scalars(run / "tensorboard")
    assert set(scalars) == set(METRIC_COLUMNS) - {"epoch"}
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [1, 2, 3]  # one point per epoch, none duplicated by the resume
        assert [v for _, v in points] == pytest.approx([row[tag] for row in history], rel=1e-6)


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install"):
        fit(load_config("bundled", [*TINY, "epochs=1", "tensorboard=true"]), tmp_path / "a", reporter=Reporter())
    assert main(["train", *TINY_CLI, "--epochs", "1", "--tensorboard", "--out", str(tmp_path / "b")]) == 2
    assert "senet train: error: tensorboard logging is on" in capsys.readouterr().err
