"""prepare_for_inference: the folded channels_last path, compiled by a rule, equal to eager."""

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest
import torch
from small_models import small_model
from torch import nn

from senet.deploy.fast import FastInference, prepare_for_inference


@pytest.mark.parametrize("name,overrides", [
    ("se_resnet20", {"layers": (1, 1, 1)}),
    ("se_vgg16_bn", {"num_classes": 5, "layers": (16, "M", 32, "M"), "mlp_width": 32}),
    ("se_densenet121", {"num_classes": 5, "layers": (1, 1, 1, 1)}),
])
def test_eager_path_is_folded_channels_last_and_equal(name, overrides):
    model, side = small_model(name, overrides)
    x = torch.randn(2, 3, side, side)
    fast = prepare_for_inference(model, 2, compile=False, example=x)
    assert isinstance(fast, FastInference) and not fast.inference_report.compiled
    assert fast.inference_report.compile_seconds is None and fast.inference_report.compile_requested == "off"
    assert fast.net.fold_report.folded  # BN folded into the convolutions
    conv = next(m for m in fast.net.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want = model(x)
    got = fast(x)
    assert torch.is_inference(got) and (got - want).abs().max().item() <= 1e-4
    assert fast.inference_report.max_abs_diff <= 1e-4
    # Another batch size runs too (the eager folded network), and the caller's model keeps its BNs.
    assert fast(x[:1]).shape == (1, want.shape[1])
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(k.startswith("net.") for k in fast.state_dict())


@dataclasses.dataclass(frozen=True)
class _Card:
    input_size: tuple


def test_default_example_uses_the_model_card_input_size():
    model, _ = small_model("se_resnet20", {"layers": (1, 1, 1)})
    model.train()
    fast = prepare_for_inference(model, 1, compile=False)
    assert model.training  # the caller's model keeps its mode
    assert fast.inference_report.input_size == model.pretrained_cfg.input_size == (3, 32, 32)
    model.pretrained_cfg = _Card(input_size=(3, 40, 40))
    fast = prepare_for_inference(model, 1, compile=False)
    assert fast.inference_report.input_size == (3, 40, 40) and "eager" in fast.inference_report.summary()


@pytest.mark.parametrize("kwargs,match", [
    ({"compile": "yes"}, "compile='yes'"),
    ({"compile": 1}, "compile=1"),
    ({"batch_size": 0}, "batch_size"),
    ({"example": torch.randn(3, 3, 32, 32)}, "example must be a batch of 2"),
])
def test_bad_arguments_are_named(kwargs, match):
    model, _ = small_model("se_resnet20", {"layers": (1, 1, 1)})
    args = {"batch_size": 2, "compile": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        prepare_for_inference(model, **args)
    with pytest.raises(TypeError, match="expects an nn.Module"):
        prepare_for_inference("se_resnet20")


@pytest.mark.slow
@pytest.mark.parametrize("mode", [True, "auto"])
def test_compiled_path_equals_eager_and_reports_its_cost(mode):
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    x = torch.randn(4, 3, side, side)
    fast = prepare_for_inference(model, 4, compile=mode, example=x)
    report = fast.inference_report
    assert report.compile_seconds > 0 and "compiling took" in report.summary()
    # "auto" follows the rule (a registered network, Inductor available here), not a timing
    assert report.compiled and report.compile_reason == (
        "compile=True asked for" if mode is True else "compiled: a registered network and Inductor available")
    with torch.no_grad():
        want = model(x)
    assert (fast(x) - want).abs().max().item() <= 1e-3
    assert fast(x[:1]).shape == (1, 10)  # another size: the eager folded network, no recompilation


def _bench_script():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cpu_inference.py"
    spec = importlib.util.spec_from_file_location("bench_cpu_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_bench(capsys, paths, *extra):
    bench = _bench_script()
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--models", "se_resnet20", "resnet20", "--size", "32", "--batches", "2", "--rounds", "1",
                           "--threads", str(threads), "--paths", *paths, *extra]) == 0
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


NUMBER = r" +[\d.]+"


@pytest.mark.slow
def test_cpu_inference_benchmark_runs_at_toy_size(capsys):
    paths = ["eager", "folded", "se_fold", "export", "ort_fp32", "ort_int8"]
    paths += ["ov_fp32"] if importlib.util.find_spec("openvino") else []
    text = _run_bench(capsys, paths, "--load")
    assert "batch 2 (ms per batch, medians):" in text and re.search(r"load average before: [\d.]+", text)
    assert re.search(r"load average after: [\d.]+", text)
    # per path: each model, SE/plain with its quartiles, x ort_fp32, then loaded time and slowdown for each model
    for path in paths:
        assert re.search(rf"^{path}{NUMBER * 10}$", text, re.M), path


@pytest.mark.slow
def test_cpu_inference_benchmark_compiled_paths_at_toy_size(capsys):
    pytest.importorskip("torchao")
    text = _run_bench(capsys, ["compiled", "default", "se_fold_compiled", "int8", "ort_fp32"])
    for path in ("compiled", "default", "se_fold_compiled", "int8"):
        assert re.search(rf"^{path}{NUMBER * 6}$", text, re.M), path


def test_cpu_inference_benchmark_reports_the_paired_ratio_and_its_spread():
    bench = _bench_script()
    # Round by round SE/plain: drift that slows both models in a round cancels in its ratio.
    assert bench._quartiles([1.0, 1.1, 1.2, 1.3, 1.4]) == pytest.approx((1.1, 1.2, 1.3))
    results = {("se", 8, "quiet"): {"eager": 10.0, "ort_fp32": 8.0}, ("plain", 8, "quiet"): {"eager": 5.0, "ort_fp32": 4.0}}
    paired = {(8, "quiet"): {"eager": (1.1, 1.2, 1.3), "ort_fp32": (0.9, 1.0, 1.1)}}
    text = bench.report(results, ["se", "plain"], [8], paired)
    assert re.search(r"^eager +10\.00 +5\.00 +1\.200 +1\.100 +1\.300 +1\.25$", text, re.M), text
