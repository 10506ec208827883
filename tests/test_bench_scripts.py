"""The one-command GPU benchmarks run end to end on a CPU at toy sizes.

No GPU is at hand in CI, so these check what would otherwise first fail on a lent GPU: that every
figure's settings are accepted and that every ratio a target is checked against is produced under
the name the script looks up. The numbers themselves mean nothing at these sizes.
"""

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from senet.cost.speed import benchmark

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _tiny(text: str) -> str:  # the figures' ResNet-50-sized models -> SE-ResNet-20 (same keys, other name)
    return text.replace("se_resnext50_32x4d", "se_resnet20").replace("se_resnet50", "se_resnet20")


def _toy(kwargs: dict) -> dict:
    # aot_eager instead of Inductor: the columns and ratios, not Inductor's minutes of compiling on a CPU.
    return {**kwargs, "batch_size": 1, "input_size": (3, 8, 8), "rounds": 1, "steps": 1, "warmup": 0,
            "device": "cpu", **({"compile_backend": "aot_eager"} if kwargs.get("compiled") else {})}


@pytest.mark.slow
def test_bench_se_every_figure_yields_what_its_targets_read(monkeypatch):
    bench_se = _script("bench_se")
    # The kernels' correctness is tests/test_fused_se.py's job; here the Triton interpreter would only be slow.
    monkeypatch.setenv("SENET_FUSED", "0")
    _title, kwargs, targets = bench_se.headline(max_autotune=True)
    assert kwargs["precision"] == "bf16" and kwargs["channels_last"] and kwargs["batch_size"] == 128
    assert kwargs["compiled"] == ["default", "max-autotune"]
    assert [(t.value, t.op, t.bound) for t in targets] == [
        ("fused on", "<=", 1.10), ("fused on", "<", "fused off"), ("fused on", "<", "compile default"),
        ("fused on", "<", "compile max-autotune")]
    # Run without the max-autotune column (one compile mode proves the plumbing).
    figures = [bench_se.headline()] + bench_se.more_figures(has_timm=False) + [bench_se.cpu_figure()]
    assert len(figures) == 5
    threads = torch.get_num_threads()
    try:
        for _title, kwargs, targets in figures:
            kwargs = _toy(kwargs)
            result = benchmark([_tiny(n) for n in kwargs.pop("names")], **kwargs)
            targets = [dataclasses.replace(t, value=_tiny(t.value),
                                           bound=_tiny(t.bound) if isinstance(t.bound, str) else t.bound)
                       for t in targets]
            for verdict in bench_se.evaluate(result, targets):
                assert math.isfinite(verdict["value"]) and verdict["pass"] in (True, False)
    finally:
        torch.set_num_threads(threads)
    assert bench_se.more_figures(has_timm=True)[1][2][0].value == "se_resnet50 / timm seresnet50 (throughput)"


def _toy_cpu_figure(bench_se):
    return lambda: ("CPU toy", dict(
        names=["se_resnet20"], baseline=True, mode="infer", batch_size=1, input_size=(3, 8, 8), device="cpu",
        rounds=1, steps=1, warmup=0), [bench_se.Target("infer", "se_resnet20 / se_resnet20 without SE (time)",
                                                       "<=", 1e9)])


@pytest.mark.parametrize("full_matrix", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["some", "all"])
def test_bench_se_checks_then_times_and_writes_json(monkeypatch, tmp_path, capsys, full_matrix):
    """``--device cpu`` end to end: the correctness phase (the kernels in Triton's interpreter; the
    default tier runs every 40th case of the matrix, the slow tier all), then the CPU figure at a toy
    size; one JSON file, a PASS/FAIL line per check."""
    pytest.importorskip("triton")
    bench_se = _script("bench_se")
    monkeypatch.setattr(bench_se, "cpu_figure", _toy_cpu_figure(bench_se))
    if not full_matrix:
        cases = list(bench_se.fused_check.matrix())
        monkeypatch.setattr(bench_se.fused_check, "matrix", lambda: iter(cases[::40]))
    threads = torch.get_num_threads()
    try:
        code = bench_se.main(["--device", "cpu", "--json", str(tmp_path / "b.json")])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS  correctness: " in out and "on the kernels) match float64" in out
    assert out.index("PASS  correctness") < out.index("=== CPU toy")
    assert "PASS  se_resnet20 / se_resnet20 without SE (time) = " in out
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["correctness"]["pass"] is True and data["correctness"]["taken"] > 0
    assert data["targets"][1]["pass"] is True and data["figures"][0]["title"] == "CPU toy"
    assert data["figures"][0]["environment"]["versions"]["torch"]


def test_bench_se_stops_before_timing_on_a_mismatch(monkeypatch, tmp_path, capsys):
    """A fused op that computes the wrong thing: FAIL, exit 1, and nothing timed."""
    bench_se = _script("bench_se")
    timed = []
    monkeypatch.setattr(bench_se, "benchmark", lambda *a, **k: timed.append(a))
    monkeypatch.setattr(bench_se.fused_check, "matrix", lambda: iter([("apply", (2, 16, 4, 4), "contiguous", "same",
                                                                       torch.float32, 0)]))

    def wrong(*case):
        raise AssertionError("forward off by 0.5")
    monkeypatch.setattr(bench_se.fused_check, "check_case", wrong)
    code = bench_se.main(["--device", "cpu", "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert code == 1 and timed == []
    assert "FAIL  correctness: apply (2, 16, 4, 4) contiguous (shortcut same) float32 seed 0: forward off by 0.5" in out
    assert json.loads((tmp_path / "b.json").read_text())["correctness"]["pass"] is False


def test_bench_pipeline_gpu_case_runs_on_cpu(capsys):
    bench_pipeline = _script("bench_pipeline")
    threads = torch.get_num_threads()
    try:
        ratio = bench_pipeline.loop_ratio("r50", torch.device("cpu"), rounds=1, epochs=2, extra=[
            "model.name=se_resnet20", "data.dataset=synthetic:16:3x16x16", "batch_size=8", "eval_batch_size=8",
            "threads=1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert ratio > 0 and "median product/bare throughput ratio" in out and "bfloat16" in out
