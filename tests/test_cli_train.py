"""senet train / eval / predict through the command line, on a tiny model and synthetic data."""

import pytest
from PIL import Image

from senet.cli import main
from senet.data import load_dataset

TINY = ["--model", "se_resnet20", "--data", "synthetic:128:3x16x16", "--batch-size", "32", "--lr", "0.2",
        "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=32", "--device", "cpu"]


def test_train_eval_predict_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(run), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "epoch   1/1" in out and "top-1 err" in out and "final: top-1 error" in out
    assert "\r" not in out  # no progress bar when stdout is not a terminal

    assert main(["eval", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    assert "top-1 error" in out and "top-5 error" in out and "25 images" in out

    test = load_dataset("synthetic:128:3x16x16", "test")
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(paths[-1])
    assert main(["predict", "--checkpoint", str(run / "checkpoints/last.safetensors"), *map(str, paths)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{paths[0]}:" and len(out) == 2 * 6
    probs = [float(line.split("%")[0]) for line in out[1:6]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01
    assert all(line.split("%  ")[1] in test.classes for line in out[1:6])

    # --resume continues the same run for more epochs, with the stored config (seed 3).
    assert main(["train", "--resume", str(run), "--epochs", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "resumed" in out and "epoch   2/2" in out
    assert "seed: 3" in (run / "config.yaml").read_text()
    assert len((run / "metrics.csv").read_text().splitlines()) == 3


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["train", "--model", "se_resnet2O", "--out", str(tmp_path / "r"), "--epochs", "1"]) == 2
    assert "se_resnet20" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "ok")]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(tmp_path / "ok"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "bad.png" in err and "no image could be read" in err


def test_terminal_reporter_shows_a_live_bar_on_a_tty():
    import io

    from senet.train import TerminalReporter, fit, load_config

    stream = io.StringIO()
    cfg = load_config("bundled", ["model.overrides.layers=[1,1,1]", "data.dataset=synthetic:64:3x8x8",
                                  "batch_size=16", "epochs=1", "eval_batch_size=16"])
    fit(cfg, None, reporter=TerminalReporter(stream, tty=True, mininterval=0))
    text = stream.getvalue()
    assert "epoch 1/1" in text and "loss=" in text and "acc=" in text and "4/4" in text
    assert "top-1 err" in text and text.rstrip().splitlines()[-1].startswith("final:")


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    """The documented launch: torchrun --standalone --nproc_per_node 2 -m senet.cli train (gloo on CPU)."""
    import subprocess
    import sys

    run = tmp_path / "ddp"  # `python -m torch.distributed.run` is torchrun, found without PATH
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "senet.cli",
           "train", *TINY, "--epochs", "1", "--out", str(run), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("epoch   1/1") == 1  # only rank 0 prints
    assert "world size 2" in proc.stdout and (run / "checkpoints/last.safetensors").is_file()
    # Rank 0 finishes writing before the group is torn down (a race once aborted rank 1 mid-write).
    assert all((run / f).is_file() for f in ("curves.png", "report.md", "metrics.csv"))

