"""senet.export / senet export: ONNX (checked with onnxruntime) and TorchScript, every family and SE option."""

import sys

import pytest
import torch
from small_models import family_cases, small_model

import senet
from senet.cli import main
from senet.export import ExportCheckError

CASES = family_cases()


@pytest.mark.parametrize("name,overrides", CASES, ids=[n for n, _ in CASES])
def test_every_family_exports_and_matches(tmp_path, name, overrides):
    model, side = small_model(name, overrides)
    # ONNX with a dynamic batch (checked at batch 2 and 3), TorchScript at a fixed batch (checked at 1).
    for fmt, file, dynamic in (("onnx", "m.onnx", True), ("torchscript", "m.pt", False)):
        result = senet.export(model, tmp_path / file, fmt, input_size=side, dynamic_batch=dynamic)
        assert (tmp_path / file).is_file() and result.checked_batches == ((2, 3) if dynamic else (1,))
        assert result.max_abs_diff <= 1e-4
    assert not model.training and next(model.parameters()).dtype == torch.float32  # the caller's model untouched


@pytest.mark.parametrize("option", [
    {"se_squeeze": "max"}, {"se_squeeze": "none"}, {"se_gate": "tanh"}, {"se_gate": "relu"},
    {"se_gate": "hard_sigmoid"}, {"se_position": "pre"}, {"se_position": "post"}, {"se_position": "identity"},
    {"se_position": "3x3"}, {"se_fc": "linear"},
], ids=lambda o: "-".join(map(str, o.values())))
def test_se_options_export(tmp_path, option):
    overrides = {"layers": (1, 1, 1), **option}
    for fmt, file in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        result = senet.export("se_resnet20", tmp_path / file, fmt, overrides=overrides, dynamic_batch=True)
        assert result.max_abs_diff <= 1e-4 and result.input_size == (3, 32, 32)


def test_summary_names_what_was_checked(tmp_path):
    result = senet.export("se_resnet20", tmp_path / "a.onnx", overrides={"layers": (1, 1, 1)})
    import onnxruntime  # the file runs on its own, with the names export gives its input

    session = onnxruntime.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": torch.randn(1, 3, 32, 32).numpy()})[0].shape == (1, 10)
    text = result.summary()
    assert "onnxruntime" in text and "batch size(s) 1:" in text and "max abs difference" in text
    assert result.checked_batches == (1,) and "fixed batch" in text


class _Drifting(torch.nn.Module):
    """Its output changes with every call (Python state a trace freezes): no export can match it."""

    in_chans = 3

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x).mean((2, 3)) * self.calls


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_a_mismatch_fails_and_writes_nothing(tmp_path, fmt):
    path = tmp_path / "m.out"
    with pytest.raises(ExportCheckError, match="differs from eager PyTorch"):
        senet.export(_Drifting(), path, fmt, input_size=8)
    assert not list(tmp_path.iterdir())  # neither the file nor a temporary one


def test_cli_export_and_errors(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.pt"
    assert main(["export", "se_resnet20", "--format", "torchscript", "--out", str(out), "--input-size", "3", "24",
                 "24", "--dynamic-batch", "--set", "layers=[1,1,1]", "--set", "se_gate=tanh"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "Nx3x24x24" in text and "batch size(s) 2, 3" in text
    assert torch.jit.load(str(out))(torch.randn(5, 3, 24, 24)).shape == (5, 10)  # loads and runs on its own
    assert main(["export", "se_resnt20", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "se_resnet20" in capsys.readouterr().err
    assert main(["export", "se_resnet20", "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    assert main(["export", "se_resnet20", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'senet[export]'" in err and "onnxruntime" in err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", ["se_resnet50", "se_resnext50_32x4d", "se_inception_v3", "se_mobilenet_v1",
                                  "se_shufflenet_v1_g3", "se_densenet121"])
def test_acceptance_full_size(tmp_path, name, fmt):
    """The issue's acceptance: the six networks at their own input size, 1000 classes."""
    result = senet.export(name, tmp_path / "m", fmt, dynamic_batch=True)
    assert result.max_abs_diff <= 1e-4
