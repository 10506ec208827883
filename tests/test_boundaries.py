"""Writes that cannot hurt: a full disk, a read-only place or a failed command ends in one line
naming the file, leaves no temporary file, and changes no file the user had.

A full disk is a small tmpfs where mounting is allowed (root in a container); elsewhere those
tests skip, and the same paths are covered by patching the write to fail with ENOSPC."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest
import torch

import senet.atomic as atomic
from senet.atomic import atomic_write_bytes, check_writable
from senet.cli import main
from senet.errors import WriteError
from cli_output import one_line as _one_line


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: a full disk is simulated by patching instead")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or 'not permitted'}); "
                    "a full disk is simulated by patching instead")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 kB file system, with a 40 kB file the user already has on it."""
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    _mount(disk, "size=64k")
    (disk / "mine.pt").write_bytes(b"u" * 40_000)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture
def read_only(tmp_path):
    disk = tmp_path / f"ro-{uuid.uuid4().hex[:6]}"
    _mount(disk, "size=64k,ro")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _unchanged(disk: Path) -> None:
    assert sorted(p.name for p in disk.iterdir()) == ["mine.pt"]  # no temporary file, nothing half-written
    assert (disk / "mine.pt").read_bytes() == b"u" * 40_000


@pytest.mark.parametrize("fmt, name", [("torchscript", "mine.pt"), ("pt2", "m.pt2"), ("onnx", "m.onnx")])
def test_export_to_a_full_disk_is_one_line_and_leaves_nothing(full_disk, capsys, fmt, name):
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    out = full_disk / name
    assert main(["export", "se_resnet20", "--set", "layers=[1,1,1]", "--out", str(out), "--format", fmt]) == 1
    _one_line(capsys, f"senet export: error: cannot write {out}: no space left on the device")
    _unchanged(full_disk)


def test_a_native_writer_never_touches_the_full_disk(full_disk, capsys, monkeypatch):
    """Without the free-space check (a file system that does not report it), the write itself
    fails: in Python, so it is an error and not an abort, and the temporary file goes."""
    import senet.deploy.export as export_module

    monkeypatch.setattr(export_module, "check_free_space", lambda path, size: None)
    out = full_disk / "mine.pt"
    assert main(["export", "se_resnet20", "--set", "layers=[1,1,1]", "--out", str(out), "--format",
                 "torchscript"]) == 1
    _one_line(capsys, f"cannot write {out}: no space left on the device")
    _unchanged(full_disk)


def test_a_full_disk_before_training_leaves_no_run_folder(full_disk, capsys):
    (full_disk / "filler").write_bytes(b"f" * (24_000 - 4096))  # the last blocks taken
    run = full_disk / "r"
    status = main(["train", "--model", "se_resnet20", "--data", "synthetic:32:3x16x16", "--batch-size", "16",
                   "--set", "model.overrides.layers=[1,1,1]", "--epochs", "1", "--out", str(run)])
    err = capsys.readouterr().err
    assert status == 1 and "no space left" in err and "internal error" not in err and "--resume" not in err, err
    assert not run.exists()  # neither the folder nor its lock is left behind


def test_quantize_out_to_a_read_only_place_fails_before_any_work(read_only, capsys, monkeypatch):
    import senet.deploy.quantize as quantize_module

    def never(*args, **kwargs):
        raise AssertionError("calibrated before checking --out")

    monkeypatch.setattr(quantize_module, "quantize_and_measure", never)
    for flag, name in (("--out", "q.pt2"), ("--onnx", "q.onnx")):
        assert main(["quantize", "se_resnet20", flag, str(read_only / name)]) == 2
        _one_line(capsys, f"cannot write {read_only / name}", "read-only file system")
    assert list(read_only.iterdir()) == []


def test_export_to_a_read_only_place_fails_before_exporting(read_only, capsys, monkeypatch):
    import senet.deploy.export as export_module

    monkeypatch.setattr(export_module, "resolve_model", lambda *a: pytest.fail("exported before checking --out"))
    out = read_only / "m.onnx"
    with pytest.raises(SystemExit) as e:  # the CLI's --out check (argparse)
        main(["export", "se_resnet20", "--out", str(out)])
    assert e.value.code == 2 and "read-only" in capsys.readouterr().err
    with pytest.raises(OSError, match=f"cannot write {out}: folder .* is not writable \\(read-only file system\\)"):
        export_module.export("se_resnet20", out)


# --- the same guarantees where no file system can be mounted: the write patched to fail -------------

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left on the device"),
                                         (errno.EROFS, "read-only file system"),
                                         (errno.EACCES, "permission denied")])
def test_atomic_write_maps_os_errors_to_one_line_naming_the_target(tmp_path, monkeypatch, code, words):
    target = tmp_path / "metrics.csv"
    target.write_bytes(b"old")

    def failing_fsync(fd):
        raise OSError(code, "refused")

    monkeypatch.setattr(atomic.os, "fsync", failing_fsync)
    with pytest.raises(WriteError) as e:
        atomic_write_bytes(target, b"new content")
    assert str(e.value) == f"cannot write {target}: {words}"
    assert isinstance(e.value, OSError) and e.value.__cause__.errno == code
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_atomic_write_checks_the_free_space_first(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(WriteError, match=r"cannot write .*big\.bin: no space left on the device \(needs 1\.0 MB, "
                                         r"1 kB free\)"):
        atomic_write_bytes(tmp_path / "big.bin", b"x" * 2**20)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_removes_its_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "report.md"

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"text")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_names_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"cannot write {tmp_path}/no/x.onnx: folder {tmp_path}/no does not"):
        check_writable(tmp_path / "no" / "x.onnx")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "x.onnx") == tmp_path / "x.onnx"


def test_export_write_failure_patched_leaves_the_users_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.pt"
    out.write_bytes(b"the user's model")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    assert main(["export", "se_resnet20", "--set", "layers=[1,1,1]", "--out", str(out), "--format",
                 "torchscript"]) == 1
    _one_line(capsys, f"senet export: error: cannot write {out}: no space left on the device")
    assert out.read_bytes() == b"the user's model" and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_quantize_with_one_calibration_image_is_not_an_error(tmp_path, capsys):
    pytest.importorskip("torchao")
    out = tmp_path / "q.pt2"
    assert main(["quantize", "se_resnet20", "--set", "layers=[1,1,1]", "--calibration-images", "1",
                 "--eval-images", "4", "--batch-size", "1", "--no-compile", "--out", str(out)]) == 0
    assert "calibrated on 1 images" in capsys.readouterr().out
    assert torch.export.load(str(out)).module()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# --- no silent fallback -------------------------------------------------------------------------------

def test_a_bug_preparing_a_registered_network_is_loud_not_a_fallback(monkeypatch, capsys, recwarn):
    import senet.deploy.fast as fast
    from senet import create_model

    def broken_fold(*args, **kwargs):
        raise ValueError("folding bug")

    monkeypatch.setattr(fast, "fold_for_inference", broken_fold)
    model = create_model("se_resnet20", layers=(1, 1, 1))
    assert fast.fast_path_refuses(model) is None
    with pytest.raises(ValueError, match="folding bug"):
        fast.serving_model(model, "cpu", 2)
    assert not [w for w in recwarn if "fast inference path" in str(w.message)]


def test_a_network_of_the_users_own_is_refused_by_a_check(recwarn):
    from senet.deploy.fast import fast_path_refuses, serving_model

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
    assert fast_path_refuses(net) == "Sequential is not a registered senet network"
    assert serving_model(net, "cpu", 2) is net
    assert [str(w.message) for w in recwarn] == ["the fast inference path does not apply: Sequential is not a "
                                                 "registered senet network; running it as loaded"]


# --- images as the user has them ------------------------------------------------------------------

def test_a_corrupt_image_is_left_out_of_the_split_not_counted_twice(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for label, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 12), (30 * i, 120 * label, 60)).save(root / split / name / f"{i}.png")
    bad = root / "val" / "a" / "0.png"
    bad.write_bytes(b"garbage")
    run = tmp_path / "r"
    assert main(["train", "--data", str(root), "--batch-size", "2", "--epochs", "1", "--set",
                 "model.overrides.layers=[1,1,1]", "--set", "data.image_size=8", "--set", "eval_batch_size=4",
                 "--set", "data.num_workers=0", "--out", str(run)]) == 0
    capsys.readouterr()
    with warnings.catch_warnings():  # shown as Python shows them to a user (pytest records them otherwise)
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        assert main(["eval", str(run)]) == 0
    out = capsys.readouterr()
    assert "5 images (1 that cannot be decoded left out)" in out.out
    error = float(out.out.split("top-1 error ")[1].split("%")[0])
    assert round(error * 5 / 100, 6) == round(error * 5 / 100)  # a whole number of the 5 images, not of 6
    warned = [line for line in out.err.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith("senet eval: warning: skipping cannot decode image")
    assert str(bad) in warned[0] and "left out of the test split" in warned[0]


def test_a_missing_data_folder_is_named_as_such(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "myimagez", "--out", str(tmp_path / "r")]) == 2
    line = _one_line(capsys, "no such folder: 'myimagez'")
    assert "is not supported" not in line and not (tmp_path / "r").exists()


# --- the command line's own words, and CI ---------------------------------------------------------------

@pytest.mark.parametrize("argv, expected", [
    (["eval", "--bogus", "x"], "senet eval: error: unrecognized arguments: --bogus (see senet eval --help)"),
    (["summary", "se_resnet20", "--input-size", "3", "16"],
     "senet summary: error: argument --input-size: input size '3x16' is not N (3xNxN), CxHxW or C H W"),
])
def test_argument_errors_are_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith(expected), err


def test_ci_fails_on_an_empty_slow_tier():
    """pytest exits 5 when no test is selected; CI must not take that for a pass."""
    script = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "set -euo pipefail" in commands[0]
    slow = [line for line in commands if "-m slow" in line]
    assert slow == ["python -m pytest -q -m slow"]  # its exit status, 5 included, is the script's


def test_export_hides_only_the_warnings_it_expects(tmp_path):
    from senet.deploy.export import export

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            if x.sum() > -1e9:  # a tensor to a Python bool: the tracer's expected note, hidden
                warnings.warn("this model's own tracer note", torch.jit.TracerWarning)
            return self.fc(x.mean((2, 3)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export(Noisy(), tmp_path / "m.pt", "torchscript", input_size=(3, 8, 8))
    shown = [str(w.message) for w in caught]
    assert "this model's own tracer note" in shown
    assert not any(m.startswith("Converting a tensor to a Python boolean") for m in shown)


def test_the_compiled_graph_serves_only_the_shape_it_was_compiled_for():
    from senet.deploy.fast import FastInference, InferenceReport

    calls = []
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    report = InferenceReport(2, (3, 8, 8), compiled=True, compile_requested="on", compile_seconds=0.0,
                             compile_reason="compile=True asked for", max_abs_diff=0.0)
    fast = FastInference(net, lambda x: calls.append(tuple(x.shape)) or net(x), report)
    fast(torch.randn(2, 3, 8, 8))
    fast(torch.randn(2, 3, 16, 16))  # same batch, another image size: the eager network, no recompile
    fast(torch.randn(3, 3, 8, 8))
    assert calls == [(2, 3, 8, 8)]


def test_quantize_a_checkpoint_reports_accuracy_and_refuses_other_data(tmp_path, capsys):
    pytest.importorskip("torchao")
    run = tmp_path / "r"
    assert main(["train", "--model", "se_resnet20", "--data", "synthetic:64:3x16x16", "--batch-size", "32",
                 "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=32", "--epochs", "1",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["quantize", str(run), "--data", "bundled", "--calibration-images", "8", "--eval-images", "8",
                 "--no-compile"]) == 2
    _one_line(capsys, "senet quantize: error: ", "accuracy would be meaningless")
    assert main(["quantize", str(run), "--calibration-images", "8", "--eval-images", "8", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert "top-1 error on 8 images: fp32" in out and "random weights" not in out


def test_a_batch_that_leaves_much_of_a_small_split_out_is_announced():
    from senet.data import load_dataset, make_loader

    data = load_dataset("synthetic:150:3x8x8", "train")
    with pytest.warns(UserWarning, match=r"batch_size=128 leaves 22 of the 150 samples out of each epoch"):
        make_loader(data, 128, train=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_loader(data, 50, train=True)  # divides: nothing to say
        make_loader(data, 128, train=False)  # evaluation keeps every sample


def test_the_report_and_the_best_checkpoint_agree_on_tied_epochs():
    from senet.train.reconcile import best_epoch
    from senet.train.rundir import final_summary

    history = [{"epoch": 1, "top1_err": 50.0}, {"epoch": 2, "top1_err": 40.0}, {"epoch": 3, "top1_err": 40.0}]
    _, best, _ = final_summary(history, 10, "data")
    assert best["epoch"] == best_epoch(history) == 3


def test_a_folder_of_one_class_is_refused(tmp_path):
    from PIL import Image

    from senet.data import load_dataset

    for split in ("train", "val"):
        (tmp_path / split / "cats").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / "cats" / "0.png")
    with pytest.raises(ValueError, match="has 1 class \\(cats\\); a classifier needs at least 2 class folders"):
        load_dataset(tmp_path, "train")


def test_latencies_measured_on_a_busy_cpu_carry_the_note(monkeypatch):
    from senet.cli import common

    monkeypatch.setattr(common.os, "getloadavg", lambda: (6.0, 6.0, 6.0))
    assert "the CPU is busy (load average 6.0" in common.busy_cpu_latency_note()
    monkeypatch.setattr(common.os, "getloadavg", lambda: (1.2, 1.0, 1.0))  # this process alone
    assert common.busy_cpu_latency_note() is None


def test_checkpoint_loading_hides_only_the_pickle_protocol_note(monkeypatch):
    import senet.weights.checkpoint as checkpoint

    def load(*args, **kwargs):
        warnings.warn("Detected pickle protocol 4 in the checkpoint, which was not the default", UserWarning)
        warnings.warn("something torch wants the user to know", UserWarning)
        return {}

    monkeypatch.setattr(checkpoint.torch, "load", load)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint._torch_load(b"")
    assert [str(w.message) for w in caught] == ["something torch wants the user to know"]


def test_an_input_size_that_cannot_fit_is_refused_before_any_allocation(tmp_path, capsys, monkeypatch):
    import senet.cost.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda device=None: 2**30)  # 1 GiB free
    out = tmp_path / "m.pt"
    assert main(["export", "se_resnet20", "--input-size", "3x4000x4000", "--out", str(out), "--format",
                 "torchscript"]) == 2
    _one_line(capsys, "input_size 3x4000x4000 needs more than", "GiB for a forward pass at batch 1; 1.0 GiB are "
              "available")
    assert list(tmp_path.iterdir()) == []


def test_running_out_of_memory_is_one_line_not_a_bug(monkeypatch):
    from senet.cli import describe_error

    status, line = describe_error(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                                               "can't allocate memory: you tried to allocate 4800000000 bytes."))
    assert status == 1 and line == "error: out of memory (4.5 GiB asked for); try a smaller input size or batch size"


def test_quantize_onnx_to_a_full_disk_is_one_line_and_leaves_nothing(full_disk, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("torchao")
    from senet.deploy.export import export
    from senet.deploy.quantize import quantize_onnx

    fp32 = tmp_path / "m.onnx"
    export("se_resnet20", fp32, "onnx", input_size=(3, 32, 32), dynamic_batch=True)
    with pytest.raises(WriteError, match=f"cannot write {full_disk / 'q.onnx'}: no space left on the device"):
        quantize_onnx(fp32, full_disk / "q.onnx", [torch.randn(4, 3, 32, 32)])
    _unchanged(full_disk)


def test_benchmark_picks_cpu_sized_defaults_and_says_what_it_times(monkeypatch, capsys):
    import senet.cost.speed as speed

    seen = {}

    def fake_benchmark(models, **kwargs):
        seen.update(kwargs)
        raise KeyboardInterrupt  # stop before timing anything

    monkeypatch.setattr(speed, "benchmark", fake_benchmark)
    assert main(["benchmark", "se_resnet50", "--baseline", "--device", "cpu"]) == 130
    assert {k: seen[k] for k in ("batch_size", "rounds", "steps", "warmup")} == dict(batch_size=8, rounds=3,
                                                                                      steps=2, warmup=1)
    err = capsys.readouterr().err
    assert "timing 2 network(s) on cpu, mode both: 1 warm-up + 3 rounds x 2 steps at batch 8" in err
