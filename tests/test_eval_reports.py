"""senet eval on other data, report headers and labels from the runs, and small CLI manners."""

import json
import subprocess
import sys

import pytest
import yaml

import senet
from senet.cli import build_parser, main
from senet.experiments.aggregate import aggregate_report
from senet.experiments.report import distinct_colors
from senet.weights import WeightLoadError

TINY_CLI = ["--model", "se_resnet20", "--data", "synthetic:64:3x8x8", "--batch-size", "16",
            "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=16", "--epochs", "1"]


def test_eval_on_data_that_does_not_fit_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_CLI, "--out", str(run)]) == 0
    capsys.readouterr()
    # Ten classes both, but other ones (a CIFAR network on Fashion-MNIST): refused, naming both.
    assert main(["eval", "--checkpoint", str(run), "--data", "fashion-mnist-mini"]) == 2
    err = capsys.readouterr().err
    assert "senet eval: error:" in err and "T-shirt/top" in err and "class0" in err and "--allow-mismatch" in err
    assert "1-channel images but the checkpoint expects 3 channels" in err
    # Same classes, other channels: refused unless overridden, then evaluated with a warning.
    assert main(["eval", "--checkpoint", str(run), "--data", "synthetic:64:1x8x8"]) == 2
    assert "1-channel images but the checkpoint expects 3" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--data", "synthetic:64:1x8x8", "--allow-mismatch"]) == 0
    out, err = capsys.readouterr()
    assert "top-1 error" in out and "senet eval: warning:" in err
    # Another image size only: evaluated, with a warning.
    assert main(["eval", "--checkpoint", str(run), "--data", "synthetic:64:3x12x12"]) == 0
    out, err = capsys.readouterr()
    assert "top-1 error" in out and "12x12 images but the checkpoint was trained on 8x8" in err
    # Its own data: no warning.
    assert main(["eval", "--checkpoint", str(run)]) == 0
    assert capsys.readouterr().err == ""


def test_ablate_header_names_the_data_actually_used(tmp_path, capsys):
    out = tmp_path / "abl"
    assert main(["ablate", "table11_squeeze", "--only", "Avg", "--seeds", "1", "--out", str(out), "--device", "cpu",
                 "--set", "data.dataset=synthetic:64:3x8x8", "--set", "epochs=1", "--set", "batch_size=16",
                 "--set", "model.overrides.layers=[1,1,1]", "--set", "data.num_workers=0"]) == 0
    text = (out / "report.md").read_text()
    assert "bundled" not in text and "CIFAR" not in text.split("Paper reference")[0]
    assert "se_resnet20 on synthetic (64 train / 12 test, 3x8x8, 10 classes) with global average" in text
    assert "Data: synthetic (64 train" in text


def _fake_run(path, dataset, model, errors):
    path.mkdir(parents=True)
    rows = [{"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 50.0, "train_err": 50.0, "val_loss": 1.0,
             "top1_err": e, "top5_err": 1.0, "time_s": 1.0, "images_per_s": 10.0} for i, e in enumerate(errors)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "env.json").write_text(json.dumps({"dataset": dataset, "model_params": 1000, "device": "cpu"}))
    (path / "config.yaml").write_text(yaml.safe_dump({"model": {"name": model}}))


def test_report_labels_are_unique_and_each_dataset_gets_its_own_plot(tmp_path):
    for study, model in (("compare", "se_resnet20"), ("compare", "resnet20"), ("transfer", "se_resnet20")):
        for seed in (0, 1):
            _fake_run(tmp_path / "runs" / study / model / f"seed{seed}",
                      "Fashion-MNIST subset" if study == "transfer" else "CIFAR-10 subset", model, [50, 40 - seed])
    page = aggregate_report([tmp_path / "runs"], tmp_path / "out" / "report.md")
    body = page.read_text()
    for label in ("compare/se_resnet20/seed0", "compare/resnet20/seed0", "transfer/se_resnet20/seed1"):
        assert f"[{label}](" in body
    assert "[seed0](" not in body
    assert "## CIFAR-10 subset" in body and "## Fashion-MNIST subset" in body
    figures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert figures == ["report_curves_cifar_10_subset.png", "report_curves_fashion_mnist_subset.png"]


@pytest.mark.parametrize("n", [3, 12, 24, 40])
def test_distinct_colors(n):
    colors = distinct_colors(n)
    assert len(colors) == n and len(set(colors)) == n


def test_models_piped_into_head_ends_quietly():
    # The reader closes the pipe before senet writes: what `senet models | head` does.
    proc = subprocess.Popen([sys.executable, "-m", "senet.cli", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipeError" not in err


def test_load_weights_names_a_file_that_is_not_weights(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("hello, these are notes\n")
    model = senet.create_model("resnet20")
    with pytest.raises(WeightLoadError, match=r"note.txt is not a PyTorch or safetensors weights file"):
        senet.load_weights(model, note)
    # The format is recognised from the content, whatever the suffix.
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "weights.bin"))
    assert senet.load_weights(senet.create_model("resnet20"), tmp_path / "weights.bin", source="senet").ok


def test_cli_help_names_studies_not_seeds():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        assert "seed 00" not in p.format_help(), f"senet {name} --help speaks of a project seed"
