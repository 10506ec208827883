"""What a new user trips over: help without torch, one spelling per option, options anywhere,
positional checkpoints, and one actionable line for each mistake."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from senet.cli import COMMANDS, asked_path, build_parser, describe_error, main, parse_args
from senet.train.threads import busy_cpu_note, cpu_busy

ROOT = Path(__file__).parents[1]
TINY = ["--model", "se_resnet20", "--data", "synthetic:64:3x16x16", "--batch-size", "32",
        "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=32", "--epochs", "1"]


def _one_line(capsys, status, *expected):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status != 0 and len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in err, err
    return err


# --- help without torch ---------------------------------------------------------------------------

def test_help_of_every_command_imports_no_torch():
    script = ("import sys\nfrom senet.cli import main, COMMANDS\n"
              "for argv in [['--help']] + [[c, '--help'] for c in COMMANDS]:\n"
              "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, argv\n"
              "print('torch' in sys.modules, 'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_literal_choices_agree_with_the_library():
    from senet.cli import benchmark, compare
    from senet.cost import speed
    from senet.experiments import DEFAULT_MODELS

    assert (benchmark.MODES, benchmark.PRECISIONS, benchmark.FUSED) == (speed.MODES, speed.PRECISIONS, speed.FUSED)
    assert compare.DEFAULT_MODELS == DEFAULT_MODELS


def test_every_batch_size_and_split_option_has_help():
    for name, sub in next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices.items():
        for action in sub._actions:
            if {"--batch-size", "--split"} & set(action.option_strings):
                assert action.help, (name, action.option_strings)


def test_predict_help_states_its_real_default_device(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: cpu)" in out and "else cpu" not in out


# --- parsing --------------------------------------------------------------------------------------

def test_options_may_come_between_positionals():
    args = parse_args(build_parser(), ["predict", "se_resnet50", "--set", "num_classes=3", "img.png", "--top-k", "2"])
    assert args.inputs == ["se_resnet50", "img.png"] and args.overrides == [("num_classes", 3)] and args.top_k == 2
    args = parse_args(build_parser(), ["--debug", "summary", "--baseline", "se_resnet20", "--no-parts", "resnet20"])
    assert args.models == ["se_resnet20", "resnet20"] and args.baseline and args.no_parts and args.debug


@pytest.mark.parametrize("command", ["eval", "excitations"])
def test_checkpoint_positionally_or_as_option(command, capsys):
    parser = build_parser()
    assert parse_args(parser, [command, "runs/a"]).checkpoint == "runs/a"
    assert parse_args(parser, [command, "--checkpoint", "runs/a"]).checkpoint == "runs/a"
    assert parse_args(parser, [command, "runs/a", "--checkpoint", "runs/a"]).checkpoint == "runs/a"
    for argv in ([command], [command, "runs/a", "--checkpoint", "runs/b"]):
        with pytest.raises(SystemExit) as e:
            parse_args(parser, argv)
        assert e.value.code == 2 and "checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("words", [["3", "24", "24"], ["3x24x24"], ["24"]])
@pytest.mark.parametrize("command", [["summary", "se_resnet20"], ["export", "se_resnet20", "--out", "x.onnx"],
                                     ["benchmark", "se_resnet20"]])
def test_input_size_is_spelled_the_same_everywhere(command, words):
    args = parse_args(build_parser(), [*command, "--input-size", *words])
    assert args.input_size == (3, 24, 24)
    # and a positional after a one-number size stays positional
    args = parse_args(build_parser(), [command[0], "--input-size", *words, *command[1:]])
    assert args.input_size == (3, 24, 24) and "se_resnet20" in str(vars(args))


def test_eval_takes_the_run_positionally(tmp_path, capsys):
    from senet.train import fit

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_run import tiny_config

    fit(tiny_config("epochs=1"), tmp_path / "r", device="cpu")
    assert main(["eval", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert "top-1 error" in capsys.readouterr().out


# --- one line per mistake -------------------------------------------------------------------------

def test_unknown_sweep_lists_the_shipped_ones(capsys):
    assert main(["ablate", "table99"]) == 2
    _one_line(capsys, 2, "table99", "table10_reduction", "table16_nosqueeze")


def test_export_opset_out_of_range_is_one_line(tmp_path, capsys):
    out = tmp_path / "x.onnx"
    assert main(["export", "se_resnet20", "--out", str(out), "--opset", "1"]) == 2
    _one_line(capsys, 2, "--opset 1", "7-20")
    assert not out.exists()


def test_export_opset_the_model_cannot_use_is_one_line_without_the_graph(tmp_path, capfd):
    pytest.importorskip("onnx")
    out = tmp_path / "x.onnx"
    assert main(["export", "se_resnet20", "--out", str(out), "--opset", "9", "--no-check"]) == 2
    err = capfd.readouterr().err  # (torch's C++ log would write to the file descriptor itself)
    assert "Torch IR graph" not in err and "graph(" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--opset 9" in lines[0] and "internal error" not in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_out_in_a_missing_folder_is_refused_not_created(tmp_path, capsys):
    missing = tmp_path / "nonexistent" / "dir"
    for argv in (["export", "se_resnet20", "--out", str(missing / "x.onnx")],
                 ["predict", "se_resnet20", "img.png", "--out", str(missing / "p.csv")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert str(missing / ("x.onnx" if argv[0] == "export" else "p.csv")) in err and "does not exist" in err
    assert not (tmp_path / "nonexistent").exists()


def test_out_in_an_unwritable_folder_names_the_path_asked_for(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as on a read-only file system
    with pytest.raises(SystemExit):
        main(["export", "se_resnet20", "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'x.onnx'}" in err and "read-only" in err
    # a write that fails later names the file asked for, not the hidden temporary file
    status, line = describe_error(OSError(errno.EROFS, "Read-only file system", f"{tmp_path}/.x.tmp-123.onnx"))
    assert status == 1 and line == f"error: cannot write {tmp_path}/x.onnx: read-only file system"
    assert asked_path("/d/.preds.csv.tmp-9") == "/d/preds.csv" and asked_path("/d/x.onnx") == "/d/x.onnx"


def test_dynamo_hint_names_an_extra_that_has_onnxscript(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails, as when it is not installed
    assert main(["export", "se_resnet20", "--dynamo", "--out", str(tmp_path / "x.onnx")]) == 2
    line = _one_line(capsys, 2, "onnxscript")
    extra = re.search(r"senet\[(\w+)\]", line).group(1)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("onnxscript") for dep in extras[extra])
    assert not (tmp_path / "x.onnx").exists()


def test_huge_crop_padding_names_the_key(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), "--set", "data.crop_padding=10000000"]) == 2
    _one_line(capsys, 2, "data.crop_padding", "10000000")
    assert not list((tmp_path / "r").glob("checkpoints/*"))


def test_bad_se_override_names_the_key_typed(tmp_path, capsys):
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), "--set", "model.overrides.se_reduction=0"]) == 2
    _one_line(capsys, 2, "model.overrides.se_reduction")
    assert not (tmp_path / "r").exists()


def test_missing_cifar_suggests_no_nonexistent_flag(tmp_path):
    from senet.data import DatasetNotFoundError, load_dataset

    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar10", "train", root=str(tmp_path))
    assert "--download" not in str(e.value) and "data.download=true" in str(e.value)


def test_interrupt_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    import senet.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(senet.train, "fit", interrupted)
    assert main(["train", *TINY, "--out", str(tmp_path / "my run")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and f"senet train --resume '{tmp_path / 'my run'}'" in err


def test_top5_is_not_shown_for_five_classes_or_fewer(capsys):
    from senet.train import TerminalReporter
    from senet.train.rundir import format_table

    row = {"epoch": 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 50.0, "train_err": 50.0, "val_loss": 1.0,
           "top1_err": 40.0, "top5_err": 0.0, "time_s": 1.0, "images_per_s": 10.0}
    info = {"epochs": 1, "model": "m", "params": 1, "dataset": "d", "device": "cpu", "precision": "fp32",
            "world_size": 1, "steps": 1, "batch_size": 1, "run_dir": None}
    for classes, shown in ((3, False), (10, True)):
        reporter = TerminalReporter(tty=False)
        reporter.start({**info, "classes": classes})
        reporter.epoch_end(row)
        reporter.end([row], "done")
        out = capsys.readouterr().out
        assert ("top-5 err 0.00%" in out) == shown
        assert ("0.00" in format_table([row], top5=shown).splitlines()[-1].split()[7]) == shown


# --- a busy CPU -----------------------------------------------------------------------------------

def test_busy_cpu_rule():
    assert cpu_busy(load=3.0, cores=2, threads=2)  # two other processes on two cores
    assert not cpu_busy(load=1.0, cores=2, threads=2)  # the load is this process itself
    assert not cpu_busy(load=9.0, cores=2, threads=1)  # one thread already
    assert not cpu_busy(load=1.5, cores=2, threads=4)  # oversubscribed by its own choice, not by others


def test_busy_cpu_note_suggests_one_thread(monkeypatch):
    import torch

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    note = busy_cpu_note(0)
    assert note and "--threads 1" in note and "64.0" in note
    assert busy_cpu_note(2) is None  # the user chose a count
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert busy_cpu_note(0) is None


def test_train_prints_the_note_on_a_busy_cpu(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert main(["train", *TINY, "--out", str(tmp_path / "r"), "--device", "cpu"]) == 0
    assert sum("--threads 1" in line for line in capsys.readouterr().out.splitlines()) == 1
