"""The one-command GPU benchmarks (issues 9 and 10) run end to end on a CPU at toy sizes.

No GPU is at hand in CI, so these check what would otherwise first fail on a lent GPU: that every
figure's settings are accepted and that every ratio a target is checked against is produced under
the name the script looks up. The numbers themselves mean nothing at these sizes.
"""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from senet.cost.speed import benchmark

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(text: str) -> str:  # the figures' ResNet-50-sized models -> SE-ResNet-20 (same keys, other name)
    return text.replace("se_resnext50_32x4d", "se_resnet20").replace("se_resnet50", "se_resnet20")


def test_bench_se_every_figure_yields_the_ratios_it_checks(monkeypatch):
    bench_se = _script("bench_se")
    # The kernels' correctness is tests/test_fused_se.py's job; here the Triton interpreter would only be slow.
    monkeypatch.setenv("SENET_FUSED", "0")
    figures = bench_se.figures(has_timm=False) + [bench_se.cpu_figure()]
    assert len(figures) == 5
    threads = torch.get_num_threads()
    try:
        for _title, kwargs, checks in figures:
            kwargs = {**kwargs, "batch_size": 1, "input_size": (3, 8, 8), "rounds": 1, "steps": 1, "warmup": 0,
                      "device": "cpu"}
            result = benchmark([_tiny(n) for n in kwargs.pop("names")], **kwargs)
            for mode, key, _target, op in checks:
                assert op in ("<=", ">=")
                assert math.isfinite(result["results"][mode]["ratios"][_tiny(key)]) and mode in kwargs["mode"]
    finally:
        torch.set_num_threads(threads)
    with_timm = bench_se.figures(has_timm=True)  # the timm comparison is one more check on the first figure
    assert [k for _m, k, _t, _o in with_timm[0][2]][-1] == "se_resnet50 [fused on] / timm seresnet50 (throughput)"


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
