"""The program's boundaries, continued (see test_boundaries.py): one line for every pickle wherever
it is loaded, the report's defaults and words, every written file through the atomic writer, and
the command line's own messages."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from senet.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "senet"


def _one_line(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in lines[0], err
    return lines[0]


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
