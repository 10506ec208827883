"""`senet benchmark` on CPU with a tiny model and few rounds: real timings, ratios computed from them."""

from __future__ import annotations

import json

import pytest
import torch

from senet.cost.speed import benchmark, timm_name
from senet.layers.fused_se import use_fused
from senet.cli import main

TINY = dict(batch_size=2, input_size=(3, 16, 16), rounds=2, steps=1, warmup=1, device="cpu")


@pytest.mark.slow
def test_benchmark_baseline_and_fused_both_modes():
    r = benchmark("se_resnet20", baseline=True, fused="both", mode="both", **TINY)
    assert set(r["results"]) == {"infer", "train"}
    for block in r["results"].values():
        models = block["models"]
        assert set(models) == {"se_resnet20 [fused on]", "se_resnet20 without SE [fused on]",
                               "se_resnet20 [fused off]", "se_resnet20 without SE [fused off]"}
        # On a CPU the fused path runs only under Triton's interpreter (the suite switches it on in
        # conftest when Triton is installed); the benchmark must report which path each model took.
        interpreted = use_fused(True, torch.zeros(1, 16, 4, 4))
        for name, s in models.items():
            assert len(s["ms_per_step"]) == 2 and all(t > 0 for t in s["ms_per_step"])
            assert s["min_ms"] <= s["median_ms"] <= s["max_ms"]
            assert s["images_per_s"] == pytest.approx(1000 * 2 / s["median_ms"])
            assert s["fused_path"] == ("[fused on]" in name and interpreted), name
        ratio = block["ratios"]["se_resnet20 [fused on] / se_resnet20 without SE [fused on] (time)"]
        assert ratio == pytest.approx(models["se_resnet20 [fused on]"]["median_ms"]
                                      / models["se_resnet20 without SE [fused on]"]["median_ms"])
        assert "se_resnet20 [fused off] / se_resnet20 [fused on] (time)" in block["ratios"]
        assert "se_resnet20 without SE [fused off] / se_resnet20 without SE [fused on] (time)" in block["ratios"]
    assert r["config"]["batch_size"] == 2 and r["environment"]["versions"]["torch"]


def test_cli_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["benchmark", "se_resnet20", "--baseline", "--mode", "infer", "--batch-size", "2",
                 "--input-size", "16", "--rounds", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
                 "--threads", "1", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "inference" in table and "se_resnet20 without SE" in table and "x\n" in table + "\n"
    data = json.loads(out.read_text())
    assert data["config"]["mode"] == "infer" and data["config"]["input_size"] == [3, 16, 16]
    assert list(data["results"]) == ["infer"]
    (ratio,) = data["results"]["infer"]["ratios"].values()
    models = data["results"]["infer"]["models"]
    assert ratio == pytest.approx(models["se_resnet20"]["median_ms"] / models["se_resnet20 without SE"]["median_ms"])


@pytest.mark.parametrize("argv,message", [
    (["--mode", "infer", "--rounds", "0"], "rounds must be an integer >= 1"),
    (["--device", "cuda"], "CUDA was asked for"),
    (["--device", "gpu9"], "is not one of the forms"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert main(["benchmark", "se_resnet20", *argv]) == 2
    assert message in capsys.readouterr().err


def test_against_timm_names_and_missing_timm(monkeypatch):
    assert timm_name("se_resnet50") == "seresnet50"
    assert timm_name("legacy_se_resnet50") == "legacy_seresnet50"
    assert timm_name("se_resnext50_32x4d") == "seresnext50_32x4d"
    import builtins

    real_import = builtins.__import__

    def no_timm(name, *a, **k):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(ValueError, match="needs timm"):
        benchmark("se_resnet20", against="timm", **TINY)


@pytest.mark.slow
def test_compiled_columns_give_se_over_plain_per_variant():
    """torch.compile of the reference composition as extra columns, each with its own SE/plain
    (aot_eager here: the plumbing, not Inductor's speed; the slow test below runs Inductor)."""
    r = benchmark("se_resnet20", baseline=True, fused="off", compiled=["default"], compile_backend="aot_eager",
                  mode="infer", **TINY)
    block = r["results"]["infer"]
    models = block["models"]
    assert set(models) == {"se_resnet20 [fused off]", "se_resnet20 without SE [fused off]",
                           "se_resnet20 [compile default]", "se_resnet20 without SE [compile default]"}
    assert models["se_resnet20 [compile default]"]["variant"] == "compile default"
    assert models["se_resnet20 [compile default]"]["fused_path"] is False  # Inductor gets the reference ops
    by = block["se_over_plain"]["se_resnet20"]
    assert set(by) == {"fused off", "compile default"}
    assert by["compile default"] == pytest.approx(models["se_resnet20 [compile default]"]["median_ms"]
                                                  / models["se_resnet20 without SE [compile default]"]["median_ms"])
    assert r["config"]["compiled"] == ["default"] and r["config"]["compile_backend"] == "aot_eager"
    with pytest.raises(ValueError, match="compiled"):
        benchmark("se_resnet20", compiled=["fastest"], **TINY)


@pytest.mark.slow
def test_cli_compiled_columns(capsys):
    code = main(["benchmark", "se_resnet20", "--baseline", "--fused", "off", "--compiled", "default",
                 "--compile-backend", "aot_eager", "--mode", "infer", "--batch-size", "2", "--input-size", "16",
                 "--rounds", "1", "--steps", "1", "--warmup", "0", "--device", "cpu", "--threads", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "se_resnet20 [compile default]" in out and "SE/plain se_resnet20: fused off" in out
    assert "compile default" in out.split("SE/plain se_resnet20:")[1]


@pytest.mark.slow
def test_inductor_column_on_cpu():
    """The real baseline: Inductor (default mode) on CPU, training step, beside eager."""
    r = benchmark("se_resnet20", baseline=True, fused="off", compiled=["default"], mode="train",
                  batch_size=2, input_size=(3, 16, 16), rounds=1, steps=1, warmup=1, device="cpu")
    by = r["results"]["train"]["se_over_plain"]["se_resnet20"]
    assert set(by) == {"fused off", "compile default"} and all(v > 0 for v in by.values())


def test_fused_both_says_whether_the_fused_path_was_faster_here():
    """``fused="both"`` ends each mode with a verdict from its own timings (fused vs eager, and vs
    Inductor when a compiled column was timed); the default times the reference composition only."""
    pytest.importorskip("triton")
    from senet.cost.speed import benchmark, format_benchmark

    toy = dict(mode="infer", batch_size=1, input_size=(3, 8, 8), rounds=1, steps=1, warmup=0, device="cpu")
    result = benchmark(["se_resnet20"], fused="both", **toy)
    (verdict,) = result["results"]["infer"]["verdicts"]
    on, off = (result["results"]["infer"]["models"][f"se_resnet20 [fused {f}]"]["median_ms"] for f in ("on", "off"))
    word = "faster" if off / on > 1 else "not faster"
    assert verdict.startswith(f"se_resnet20: fused path {word} than eager ({off / on:.3f}x)")
    assert "not compared with Inductor (time it with --compiled default)" in verdict and "measured here on cpu" in verdict
    assert verdict in format_benchmark(result)
    default = benchmark(["se_resnet20"], **toy)
    assert default["config"]["fused"] == "off" and default["results"]["infer"]["verdicts"] == []
