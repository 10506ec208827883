"""The price of SE on a GPU in one command (``senet.cost.speed``), checked against its targets.

    python benchmarks/bench_se.py                    # the headline figure (the CPU figure without CUDA)
    python benchmarks/bench_se.py --all              # also SE-ResNeXt-50, NCHW, inference, timm, CPU
    python benchmarks/bench_se.py --json out.json    # where the figures go (default bench_se.json)

The headline figure times one SGD training step of SE-ResNet-50 and of its plain twin (bf16
autocast, channels_last, 224x224, batch 128) three ways in interleaved rounds: eager PyTorch with
the reference composition, eager with the fused SE operator, and ``torch.compile`` (Inductor,
default mode) of the reference composition. Targets (docs/performance.md):

* fused SE/plain <= 1.10 (the paper, §4, reports about +10% GPU training time for SE-ResNet-50);
* fused SE/plain below eager's SE/plain and below Inductor's SE/plain (a fused operator counts
  only if it beats both).

It is sized to finish within 5 minutes on one H100/H200, compilation included (``--max-autotune``
adds Inductor's max-autotune column, which takes longer). ``--all`` adds the earlier figures:
SE-ResNeXt-50, NCHW, inference at batch 256 and timm's seresnet50, with their own targets.
Every figure and the PASS/FAIL lines go to one JSON file with the config, versions and device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from senet.cost.speed import benchmark, format_benchmark

GPU = dict(precision="bf16", channels_last=True, rounds=5, steps=10, warmup=3)



@dataclasses.dataclass(frozen=True)
class Target:
    """``value op bound`` in one mode: each side a number, a variant's SE/plain ("fused on",
    "fused off", "compile default", ...) or a ratio key of the result."""

    mode: str
    value: str
    op: str
    bound: float | str

    def read(self, result: dict, name: str | float) -> float:
        if not isinstance(name, str):
            return name
        block = result["results"][self.mode]
        if name in block["ratios"]:
            return block["ratios"][name]
        (by_variant,) = block["se_over_plain"].values()
        return by_variant[name]

    def label(self, name: str | float) -> str:
        return name if not isinstance(name, str) or " / " in name else f"SE/plain {name}"


def headline(max_autotune: bool = False) -> tuple[str, dict, list[Target]]:
    """The figure the targets are about: SE-ResNet-50 training step, eager vs fused vs Inductor."""
    compiled = ["default"] + (["max-autotune"] if max_autotune else [])
    checks = [Target("train", "fused on", "<=", 1.10), Target("train", "fused on", "<", "fused off")]
    checks += [Target("train", "fused on", "<", f"compile {m}") for m in compiled]
    return ("GPU training step, se_resnet50, batch 128, bf16, channels_last",
            dict(names=["se_resnet50"], baseline=True, fused="both", compiled=compiled, mode="train",
                 batch_size=128, **GPU), checks)


def more_figures(has_timm: bool) -> list[tuple[str, dict, list]]:
    """The earlier figures (``--all``): their checks name a ratio key of the result directly."""
    against = "timm" if has_timm else None
    out = []
    name, plain = "se_resnext50_32x4d", "se_resnext50_32x4d without SE"
    out.append((f"GPU training step, {name}, batch 128",
                dict(names=[name], baseline=True, fused="both", mode="train", batch_size=128, **GPU),
                [Target("train", f"{name} [fused on] / {plain} [fused on] (time)", "<=", 1.10),
                 Target("train", f"{plain} [fused off] / {plain} [fused on] (time)", ">=", 1.0)]))
    if has_timm:
        out.append(("GPU training step, se_resnet50 vs timm, batch 128",
                    dict(names=["se_resnet50"], fused="on", mode="train", batch_size=128, against=against, **GPU),
                    [Target("train", "se_resnet50 / timm seresnet50 (throughput)", ">=", 1.35)]))
    out.append(("GPU training step, NCHW, se_resnet50, batch 128",
                dict(names=["se_resnet50"], baseline=True, fused="both", mode="train", batch_size=128,
                     **{**GPU, "channels_last": False}), []))
    out.append(("GPU inference, se_resnet50, batch 256",
                dict(names=["se_resnet50"], baseline=True, fused="both", mode="infer", batch_size=256, **GPU),
                [Target("infer", "se_resnet50 [fused on] / se_resnet50 without SE [fused on] (time)", "<=", 1.05)]))
    return out


def cpu_figure() -> tuple[str, dict, list]:
    return ("CPU inference, 2 threads, se_resnet50, batch 8",
            dict(names=["se_resnet50"], baseline=True, mode="infer", batch_size=8, device="cpu",
                 rounds=15, steps=2, warmup=2),
            [Target("infer", "se_resnet50 / se_resnet50 without SE (time)", "<=", 1.03)])


def evaluate(result: dict, targets: list[Target]) -> list[dict]:
    """PASS/FAIL of each target on one figure's result."""
    out = []
    for t in targets:
        value, bound = t.read(result, t.value), t.read(result, t.bound)
        ok = {"<=": value <= bound, "<": value < bound, ">=": value >= bound}[t.op]
        what = f"{t.label(t.value)} = {value:.3f}x {t.op} " + (f"{t.label(t.bound)} = {bound:.3f}x"
                                                               if isinstance(t.bound, str) else f"{bound}")
        out.append({"pass": bool(ok), "check": what, "value": value, "target": bound})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-only", action="store_true", help="only the CPU figure")
    p.add_argument("--gpu-only", action="store_true", help="only the GPU figures")
    p.add_argument("--all", action="store_true", help="also the earlier figures and the CPU one (longer)")
    p.add_argument("--max-autotune", action="store_true", help="also Inductor's max-autotune column")
    p.add_argument("--json", type=Path, default=Path("bench_se.json"), help="output file (default bench_se.json)")
    p.add_argument("--out", type=Path, default=None, help="a folder: write bench_se.json there instead")
    args = p.parse_args(argv)
    if args.out is not None:
        args.json = args.out / "bench_se.json"
    try:
        import timm  # noqa: F401
        has_timm = True
    except Exception:
        has_timm = False
    todo = []
    cuda = torch.cuda.is_available()
    if not args.cpu_only:
        if cuda:
            todo.append(headline(args.max_autotune))
            todo += more_figures(has_timm) if args.all else []
        else:
            print("GPU figures: not run (no CUDA device)")
    if not args.gpu_only and (args.cpu_only or args.all or not cuda):  # the GPU run stays within 5 minutes
        todo.append(cpu_figure())
    start = time.perf_counter()
    figures, verdicts = [], []
    for title, kwargs, checks in todo:
        if kwargs.get("device") == "cpu":
            torch.set_num_threads(2)
        print(f"\n=== {title}", flush=True)
        t0 = time.perf_counter()
        result = benchmark(kwargs.pop("names"), **kwargs)
        print(format_benchmark(result))
        figure_verdicts = evaluate(result, checks)
        verdicts += figure_verdicts
        figures.append({"title": title, "seconds": time.perf_counter() - t0, "targets": figure_verdicts, **result})
        args.json.parent.mkdir(parents=True, exist_ok=True)  # written after each figure: nothing is lost
        args.json.write_text(json.dumps({"figures": figures, "targets": verdicts,
                                         "seconds": time.perf_counter() - start}, indent=2))
    print(f"\n=== targets ({time.perf_counter() - start:.0f} s, figures in {args.json})")
    print("\n".join(f"{'PASS' if v['pass'] else 'FAIL'}  {v['check']}" for v in verdicts) or "(none checked)")
    return 0 if all(v["pass"] for v in verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
