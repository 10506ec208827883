"""Bad input through the command line: a non-zero exit and one line, never a traceback;
tracebacks only under ``senet --debug``; device names checked in one place."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from PIL import Image

from senet.cli import main
from senet.errors import MissingPathError, UnknownNameError, UserInputError, WriteError
from senet.train.epoch import NonFiniteLossError
from senet.device import resolve_device

TINY = ["--model", "se_resnet20", "--data", "synthetic:64:3x16x16", "--batch-size", "32",
        "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=32", "--epochs", "1"]


def _fails(capsys, argv: list[str], *expected: str, status: int = 2) -> str:
    """Run ``senet argv``; it must exit with ``status`` and one stderr line holding ``expected``."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"senet {argv[0] if argv[0] != '--debug' else argv[1]}: "), err
    for text in expected:
        assert text in err, err
    return err


# --- failure 5: late or missing validation --------------------------------------------------------

@pytest.mark.parametrize("setting, expected", [
    ("save_every=0", "'save_every' must be >= 1"),
    ("schedule.step_size=0", "'schedule.step_size' must be >= 1"),
    ("label_smoothing=2", "'label_smoothing' must be in [0, 1)"),
    ("epochs=0", "'epochs' must be >= 1"),
    ("optim.weight_decay=-0.1", "'optim.weight_decay' must be >= 0"),
    ("schedule.warmup_epochs=-2", "'schedule.warmup_epochs' must be >= 0"),
    ("grad_clip=-1", "'grad_clip' must be >= 0"),
    ("eval_batch_size=0", "'eval_batch_size' must be >= 1"),
    ("data.image_size=0", "'data.image_size' must be >= 1"),
])
def test_bad_config_values_fail_before_any_work(tmp_path, capsys, monkeypatch, setting, expected):
    import senet.data

    loaded = []  # checked when the config is built: no data is loaded, no run directory made
    monkeypatch.setattr(senet.data, "load_dataset", lambda *a, **k: loaded.append(a))
    _fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), "--set", setting], expected)
    assert loaded == [] and not (tmp_path / "r").exists()


def test_epochs_flag_zero_fails(tmp_path, capsys):
    _fails(capsys, ["train", *TINY, "--epochs", "0", "--out", str(tmp_path / "r")], "'epochs' must be >= 1")


def test_num_classes_that_disagree_with_the_data(tmp_path, capsys):
    _fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), "--set", "model.overrides.num_classes=3"],
           "'model.overrides.num_classes' is 3 but the dataset has 10 classes")
    assert not (tmp_path / "r" / "metrics.csv").exists()


def test_binary_recipe_file_is_named(tmp_path, capsys):
    recipe = tmp_path / "model.yaml"
    recipe.write_bytes(b"\x80\x81\xfe\xff" * 64)
    _fails(capsys, ["train", "--config", str(recipe), "--out", str(tmp_path / "r")], str(recipe), "not a YAML")


@pytest.mark.parametrize("device, expected", [("gpu9", "'gpu9' is not one of the forms 'cpu', 'cuda', 'cuda:N'"),
                                              ("cuda:x", "not one of the forms"), ("cpu:3", "not one of")])
def test_malformed_device_is_refused(tmp_path, capsys, device, expected):
    _fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), "--device", device], expected)
    assert not (tmp_path / "r").exists()


def test_cuda_on_a_machine_without_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    _fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), "--device", "cuda"],
           "CUDA was asked for", "this PyTorch build", "has no CUDA")
    monkeypatch.setattr(torch.version, "cuda", "12.8")  # a CUDA build on a machine without a GPU
    _fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r"), "--device", "cuda:0"],
           "CUDA was asked for", "no GPU is visible")
    assert not (tmp_path / "r").exists()


def test_cuda_index_past_the_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"'cuda:5' does not exist: 2 CUDA device\(s\) visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:5")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device(None) == torch.device("cuda")


def test_resolve_device_forms(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu") == resolve_device("cpu") == resolve_device(torch.device("cpu"))
    with pytest.raises(ValueError, match="not one of the forms"):
        resolve_device("CUDA")
    with pytest.raises(ValueError, match="CUDA was asked for"):
        resolve_device(torch.device("cuda"))
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS"):
        resolve_device("mps")


def test_fit_checks_its_device_argument(tmp_path):
    from senet.train import TrainConfig, fit

    with pytest.raises(ValueError, match="'gpu9' is not one of the forms"):
        fit(TrainConfig(), tmp_path / "r", device="gpu9")
    assert not (tmp_path / "r").exists()


# --- failure 6: image folders ---------------------------------------------------------------------

def _folder(root: Path, per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for label, name in enumerate(("a", "b")):
            for i in range(per_class):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (12, 12), (30 * i, 120 * label, 60)).save(root / split / name / f"{i}.png")
    return root


FOLDER_ARGS = ["--batch-size", "2", "--epochs", "1", "--set", "model.overrides.layers=[1,1,1]",
               "--set", "data.image_size=8", "--set", "eval_batch_size=4", "--set", "data.num_workers=0"]


def test_corrupt_image_in_a_worker_is_one_line(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    bad = root / "train" / "a" / "0.png"
    bad.write_bytes(b"\x89PNG broken")
    _fails(capsys, ["train", "--data", str(root), *FOLDER_ARGS, "--out", str(tmp_path / "r"), "--set",
                    "data.on_corrupt=error", "--set", "data.num_workers=1"], f"cannot decode image {bad}")


def test_val_split_without_a_readable_image_fails_before_training(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    for path in (root / "val").rglob("*.png"):
        path.write_bytes(b"garbage")
    _fails(capsys, ["train", "--data", str(root), *FOLDER_ARGS, "--out", str(tmp_path / "r")],
           "no image of the 4 under", "can be decoded")
    assert not (tmp_path / "r" / "metrics.csv").exists()


def test_empty_class_folder_refused_by_option(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    (root / "train" / "c").mkdir()
    _fails(capsys, ["train", "--data", str(root), *FOLDER_ARGS, "--out", str(tmp_path / "r"),
                    "--set", "data.empty_classes=error"], "['c']", "hold no images")


def test_empty_class_folder_is_skipped_with_a_warning_and_the_run_trains(tmp_path, capsys):
    root = _folder(tmp_path / "imgs")
    (root / "train" / "c").mkdir()
    (root / "train" / "b" / "loop").symlink_to(root / "train", target_is_directory=True)
    with pytest.warns(RuntimeWarning) as caught:
        assert main(["train", "--data", str(root), *FOLDER_ARGS, "--out", str(tmp_path / "r")]) == 0
    messages = " ".join(str(w.message) for w in caught)
    assert "skipping class folder(s) ['c']" in messages and "links back" in messages
    assert "4 images, 2 classes" in capsys.readouterr().out


# --- the CLI's error handling ---------------------------------------------------------------------

def test_debug_shows_the_traceback(tmp_path):
    from senet.train import ConfigError

    with pytest.raises(ConfigError, match="save_every"):
        main(["--debug", "train", "--out", str(tmp_path / "r"), "--set", "save_every=0"])


def _raising(monkeypatch, error: BaseException) -> None:
    import senet.cli.models as models

    def boom(args):
        raise error

    monkeypatch.setattr(models, "run", boom)


@pytest.mark.parametrize("error, status, expected", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/runs"), 1, "error: /data/runs: permission denied"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/tmp/file/run"), 1, "error: /tmp/file/run: Not a directory"),
    (UnknownNameError("no model named 'x'"), 2, "error: no model named 'x'"),
    (UserInputError("lr must be positive"), 2, "error: lr must be positive"),
    (MissingPathError("no such folder: myimagez"), 2, "error: no such folder: myimagez"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a"), 1, "error: /runs/a: no space left on the device"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/.a.tmp-12.pt"), 1,
     "error: cannot write /runs/a.pt: no space left on the device"),
    (WriteError("cannot write /runs/a: no space left on the device"), 1, "error: cannot write /runs/a: no space"),
    (ZeroDivisionError("division by zero"), 1,
     "internal error: ZeroDivisionError: division by zero (run with --debug for the traceback; it is saved in "),
    # a bare builtin error from inside the program is a bug, whatever its type
    (ValueError("too many values to unpack"), 1, "internal error: ValueError: too many values to unpack (run with"),
    (KeyError("optimizer"), 1, "internal error: KeyError: 'optimizer' (run with --debug"),
    (TypeError("unsupported operand"), 1, "internal error: TypeError: unsupported operand"),
    (KeyboardInterrupt(), 130, "senet models: interrupted"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), 1,
     "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); try a smaller batch_size"),
    (NonFiniteLossError(3, 7, float("nan")), 1, "senet models: error: "),  # no --debug hint
])
def test_errors_become_one_line_and_an_exit_status(monkeypatch, capsys, error, status, expected):
    import senet.cli as cli

    parser = cli.build_parser()
    _raising(monkeypatch, error)
    monkeypatch.setattr(cli, "build_parser", lambda: _rebind(parser))
    err = _fails(capsys, ["models"], expected, status=status)
    assert ("internal error" in err) == (status == 1 and "internal" in expected)
    if "internal error" in err:  # the traceback is saved where the line says
        saved = Path(err.split("it is saved in ")[1].split(")")[0])
        assert "Traceback" in saved.read_text() and type(error).__name__ in saved.read_text()
        saved.unlink()
    with pytest.raises(type(error)):
        main(["--debug", "models"])
    with pytest.raises(type(error)):
        main(["models", "--debug"])  # after the command as well


def test_a_library_bug_is_an_internal_error_not_the_users(tmp_path, capsys, monkeypatch):
    """A bare ValueError raised deep inside the library (here: building the model) is the program's."""
    import senet.train.setup as setup

    def broken(*args, **kwargs):
        raise ValueError("shapes do not broadcast")

    monkeypatch.setattr(setup, "create_model", broken)
    err = _fails(capsys, ["train", *TINY, "--out", str(tmp_path / "r")], "internal error: ValueError: shapes do not "
                 "broadcast (run with --debug for the traceback; it is saved in ", status=1)
    Path(err.split("it is saved in ")[1].split(")")[0]).unlink()
    with pytest.raises(ValueError, match="broadcast"):
        main(["train", *TINY, "--out", str(tmp_path / "r2"), "--debug"])


def _rebind(parser):
    # add_parser bound the original run; point the models sub-command at the patched one.
    import senet.cli.models as models

    parser._subparsers._group_actions[0].choices["models"].set_defaults(func=models.run)
    return parser
