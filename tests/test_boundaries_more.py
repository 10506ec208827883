"""The program's boundaries, continued (see test_boundaries.py): one line for every pickle wherever
it is loaded, the report's defaults and words, every written file through the atomic writer, and
the command line's own messages."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
import torch
import yaml

from senet.cli import main
from cli_output import one_line as _one_line

SRC = Path(__file__).resolve().parents[1] / "src" / "senet"


# --- one line for every pickle --------------------------------------------------------------------------

class _RunsCode:
    """What a malicious pickle holds: unpickling it would call ``os.system``."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > unpickled.txt",))


@pytest.fixture
def unsafe_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"conv1.weight": _RunsCode()}, tmp_path / "archive.pth")
    torch.save({"conv1.weight": _RunsCode()}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    return tmp_path


@pytest.mark.parametrize("name", ["archive.pth", "legacy.pth"])
@pytest.mark.parametrize("argv", [["summary", "se_resnet20", "--set", "pretrained={}"],
                                  ["train", "--model", "se_resnet20", "--set", "model.weights={}", "--out", "r"]])
def test_an_unsafe_pickle_is_one_safe_line_naming_the_file(unsafe_files, capsys, name, argv):
    assert main([a.format(name) for a in argv]) == 2
    line = _one_line(capsys, name, "could run code")
    assert "weights_only" not in line and "torch.load" not in line
    assert not (unsafe_files / "unpickled.txt").exists() and not (unsafe_files / "r").exists()


def test_every_torch_load_goes_through_the_one_reader():
    """torch.load's own error advises weights_only=False; only senet.weights.torchfile calls it."""
    def calls_torch_load(path: Path) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "load"
                   and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"
                   for n in ast.walk(ast.parse(path.read_text())))

    callers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if calls_torch_load(p))
    assert callers == ["weights/torchfile.py"]


def test_a_damaged_weights_file_is_named_in_one_line(tmp_path):
    from senet.weights.convert import WeightLoadError, read_state_dict

    good = tmp_path / "w.pth"
    torch.save({"a": torch.ones(3)}, good)
    assert torch.equal(read_state_dict(good)["a"], torch.ones(3))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(WeightLoadError) as e:
        read_state_dict(cut)
    assert str(e.value).startswith(f"{cut} is truncated or damaged") and "\n" not in str(e.value)


# --- senet report ---------------------------------------------------------------------------------------

def _fake_run(path: Path, errors, epochs: int | None = None, config: bytes | None = None) -> Path:
    path.mkdir(parents=True)
    rows = [{"epoch": i + 1, "lr": 0.1, "train_loss": 1.0, "train_acc": 50.0, "train_err": 50.0, "val_loss": 1.0,
             "top1_err": e, "top5_err": 1.0, "time_s": 1.0, "images_per_s": 10.0} for i, e in enumerate(errors)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "env.json").write_text(json.dumps({"dataset": "synthetic", "model_params": 1000, "device": "cpu"}))
    text = yaml.safe_dump({"model": {"name": "se_resnet20"}, "epochs": epochs or len(errors)}).encode()
    (path / "config.yaml").write_bytes(config if config is not None else text)
    return path


def _row(page: Path, label: str) -> list[str]:
    line = next(line for line in page.read_text().splitlines() if line.startswith(f"| [{label}]("))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_goes_beside_the_runs_not_into_the_current_folder(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    _fake_run(runs / "a", [50, 40])
    _fake_run(runs / "b", [60, 45])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", str(runs / "a"), str(runs / "b")]) == 0
    assert list(elsewhere.iterdir()) == []
    page = runs / "senet_report.md"
    assert f"report: {os.path.relpath(page)}" in capsys.readouterr().out
    assert page.is_file() and (runs / "senet_report_curves.png").is_file()
    assert (runs / "a" / "metrics.jsonl").is_file() and not (runs / "a" / "report.md").exists()


def test_report_flags_a_run_that_stopped_before_its_epochs(tmp_path):
    from senet.experiments.aggregate import aggregate_report

    _fake_run(tmp_path / "runs" / "done", [50, 40, 30])
    _fake_run(tmp_path / "runs" / "cut", [50, 45], epochs=10)
    page = aggregate_report([tmp_path / "runs"], tmp_path / "out" / "page.md")
    assert _row(page, "done")[3] == "3" and _row(page, "cut")[3] == "2 of 10 (incomplete)"
    assert "**Incomplete** (fewer epochs than their config.yaml asks for" in page.read_text()
    assert "): cut." in page.read_text()


def test_report_and_best_checkpoint_agree_on_tied_epochs(tmp_path):
    from senet.experiments.aggregate import aggregate_report
    from senet.train.reconcile import best_epoch

    errors = [50.0, 40.0, 45.0, 40.0]
    _fake_run(tmp_path / "runs" / "tied", errors)
    page = aggregate_report([tmp_path / "runs"], tmp_path / "page.md")
    history = [{"epoch": i + 1, "top1_err": e} for i, e in enumerate(errors)]
    assert _row(page, "tied")[7] == f"40.00 ({best_epoch(history)})" == "40.00 (4)"


def test_report_names_a_config_that_is_not_utf8(tmp_path, capsys):
    run = _fake_run(tmp_path / "runs" / "a", [50, 40], config=b"model: {name: caf\xe9}\n")
    assert main(["report", str(tmp_path / "runs")]) == 2
    _one_line(capsys, f"{run / 'config.yaml'} is not a UTF-8 text file")
    assert not (tmp_path / "runs" / "senet_report.md").exists()


def test_report_on_a_missing_folder_says_so_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "runz", "--out", "new/page.md"]) == 2
    _one_line(capsys, "no such folder: runz")
    assert list(tmp_path.iterdir()) == []


# --- export -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_an_export_shape_error_shows_plain_sizes_before_tracing(tmp_path, capsys, fmt):
    out = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    assert main(["export", "se_resnet20", "--out", str(out), "--format", fmt, "--input-size", "1x32x32"]) == 2
    line = _one_line(capsys, "got shape (1, 1, 32, 32)", "in_chans=1")
    assert "tensor(" not in line and list(tmp_path.iterdir()) == []


# --- every written file through senet.atomic ------------------------------------------------------------

def _direct_writes(path: Path) -> list[str]:
    """Calls in ``path`` that write a file without senet.atomic: ``Path.write_text``, ``savefig`` to a
    path (not into a buffer, ``format=`` given), ``json.dump``/``np.save``/``yaml.dump`` to a file,
    and ``open`` for writing."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        keywords = {k.arg for k in node.keywords}
        mode = next((a.value for a in node.args[1:2] if isinstance(a, ast.Constant)), None) or next(
            (k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)), "r")
        into_buffer = "format" in keywords or any(getattr(a, "id", "") == "buf" for a in node.args) or (
            name == "save" and not isinstance(node.func, ast.Attribute))  # safetensors' save() returns bytes
        if (name in ("write_text", "dump", "save", "savefig", "to_csv") and not into_buffer
                or name == "open" and isinstance(mode, str) and set(mode) & set("wax")):
            found.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    return found


def test_no_module_writes_a_file_around_the_atomic_writer():
    own = {"atomic.py"}  # the writer itself; a download streams to its own verified temporary file
    found = [w for p in sorted(SRC.rglob("*.py")) if p.name not in own for w in _direct_writes(p)
             if not w.startswith("data/cifar.py")]
    assert found == []


def test_an_excitation_study_that_cannot_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import senet
    import senet.atomic as atomic
    from senet.analysis.excitation_study import excitation_study
    from senet.errors import WriteError

    model = senet.create_model("se_resnet20", num_classes=3, layers=[1, 1, 1])
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(6, 3, 16, 16, generator=g), torch.tensor([0, 1, 2, 0, 1, 2]))]
    real_replace = atomic.os.replace

    def full_at_json(src, dst):
        if str(dst).endswith("excitations.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_at_json)
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'study' / 'excitations.json'}: no space left"):
        excitation_study(model, data, ["a", "b", "c"], tmp_path / "study")
    written = sorted(p.name for p in (tmp_path / "study").iterdir())
    assert written == ["blocks.png", "class_excitations.png"]  # whole files; no temporary one left
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    excitation_study(model, data, ["a", "b", "c"], tmp_path / "study")
    report = (tmp_path / "study" / "report.md").read_text()
    assert "| learned | " in report and " | - | " in report  # three classes: no top-5 column value


def test_the_export_command_shows_a_warning_it_did_not_expect(tmp_path, monkeypatch, recwarn):
    """No filter by module: a new warning from torch.onnx says something about this export."""
    import warnings

    import senet.deploy.export as export_module

    real = export_module.export

    def export(*args, **kwargs):
        warnings.warn_explicit("a new note from the exporter", UserWarning, "utils.py", 1, module="torch.onnx.utils")
        return real(*args, **kwargs)

    monkeypatch.setattr(export_module, "export", export)
    assert main(["export", "se_resnet20", "--out", str(tmp_path / "m.pt"), "--set", "layers=[1,1,1]"]) == 0
    assert [str(w.message) for w in recwarn] == ["a new note from the exporter"]


# --- the command line's own words -------------------------------------------------------------------------

def test_a_batch_larger_than_the_data_names_the_option_not_a_python_argument(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--model", "se_resnet20", "--data", "synthetic:64:3x8x8", "--batch-size", "100",
                 "--out", str(run), "--set", "model.overrides.layers=[1,1,1]"]) == 2
    line = _one_line(capsys, "batch_size=100 exceeds the 64 samples", "senet train --batch-size")
    assert not re.search(r"(?<!make_loader\(\.\.\., )drop_last=False", line) and not run.exists()


def test_debug_after_the_command_shows_the_traceback(tmp_path, capsys):
    from senet.errors import MissingPathError

    assert main(["eval", str(tmp_path / "none")]) == 2  # without it: one line
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(MissingPathError):  # with it, either side of the command: Python's traceback
        main(["eval", str(tmp_path / "none"), "--debug"])
    with pytest.raises(MissingPathError):
        main(["--debug", "eval", str(tmp_path / "none")])


def test_quantize_latencies_on_a_busy_cpu_carry_the_note(monkeypatch, capsys):
    import senet.cli.common as common
    import senet.deploy.quantize as quantize

    def measured(model, calibration, images, labels, *, accuracy, **kwargs):
        assert accuracy is False  # a registered name: random weights, latency only
        return None, quantize.QuantizeReport("float", len(calibration), 0, len(labels), None, None, None, 8, 2.0,
                                             1.0, 1.0)

    monkeypatch.setattr(quantize, "quantize_and_measure", measured)
    monkeypatch.setattr(common.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    assert main(["quantize", "se_resnet20", "--calibration-images", "4", "--eval-images", "4",
                 "--set", "layers=[1,1,1]"]) == 0
    out, err = capsys.readouterr()
    assert "random weights: latency only" in out and "top-1 error: not measured" in out and "%" not in out
    notes = [line for line in err.splitlines() if "note:" in line]
    assert len(notes) == 1 and notes[0].startswith("senet quantize: note: the CPU is busy (load average 6.0")


@pytest.mark.parametrize("argv, expected", [
    (["--model", "se_resnet5"], "unknown model 'se_resnet5'"),
    (["--model", "se_resnet20", "--set", "model.weights=missing.pth"], "weights file not found: missing.pth"),
    (["--model", "se_resnet20", "--config", "nope.yaml"], "no recipe file or shipped recipe named 'nope.yaml'"),
])
def test_a_train_command_that_fails_before_training_leaves_no_run_folder(tmp_path, capsys, monkeypatch, argv,
                                                                          expected):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv, "--out", "run"]) == 2
    _one_line(capsys, expected)
    assert list(tmp_path.iterdir()) == []


def test_report_shows_top5_only_where_it_means_something(tmp_path):
    from safetensors.torch import save_file

    from senet.experiments.aggregate import aggregate_report

    for name, classes in (("three", 3), ("ten", 10)):
        run = _fake_run(tmp_path / "runs" / name, [50, 40])
        (run / "checkpoints").mkdir()
        save_file({"w": torch.zeros(1)}, str(run / "checkpoints" / "best.safetensors"),
                  metadata={"senet": json.dumps({"card": {"num_classes": classes}})})
    page = aggregate_report([tmp_path / "runs"], tmp_path / "page.md")
    assert _row(page, "three")[6] == "-" and _row(page, "ten")[6] == "1.00"


@pytest.mark.parametrize("free_space_known", [True, False])
def test_quantize_out_to_a_full_disk_is_one_line_and_leaves_nothing(capsys, monkeypatch, tmp_path, free_space_known):
    """``senet quantize --out m.pt2`` on a full disk: torch's own writer would abort the process.
    Where the free space is not known beforehand, the write itself fails, in Python."""
    from test_boundaries import _mount

    import senet.cli.common as common
    import senet.deploy.quantize as quantize

    disk = tmp_path / "disk"
    _mount(disk, "size=64k")
    try:
        (disk / "mine.pt").write_bytes(b"u" * 40_000)

        def measured(model, calibration, images, labels, **kwargs):
            report = quantize.QuantizeReport("float", len(calibration), 0, len(labels), None, None, None, 8, 2.0,
                                             1.0, 1.0)
            return quantize.QuantizedModel(model.eval(), "float", compile=False), report

        monkeypatch.setattr(quantize, "quantize_and_measure", measured)
        monkeypatch.setattr(common.os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet CPU: no note
        if not free_space_known:
            import senet.atomic as atomic

            monkeypatch.setattr(atomic, "check_free_space", lambda path, size: None)
        out = disk / "m.pt2"
        assert main(["quantize", "se_resnet20", "--set", "layers=[1,1,1]", "--calibration-images", "4",
                     "--eval-images", "4", "--out", str(out)]) == 1
        _one_line(capsys, f"senet quantize: error: cannot write {out}: no space left on the device")
        assert sorted(p.name for p in disk.iterdir()) == ["mine.pt"]
        assert (disk / "mine.pt").read_bytes() == b"u" * 40_000
    finally:
        import subprocess

        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
