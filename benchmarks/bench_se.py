"""The price of SE, every figure of issue 9's targets in one command (``senet.cost.speed``).

    python benchmarks/bench_se.py                 # all GPU figures (CUDA), then the CPU figure
    python benchmarks/bench_se.py --cpu-only      # the CPU figure alone (2 threads, batch 8)
    python benchmarks/bench_se.py --out runs/bench_se   # also one JSON per figure there

Each figure times its models in interleaved rounds in one process and prints the ratio beside
its target. GPU settings are the issue's: bf16 autocast, channels_last, 224x224, batch 128 for the
SGD training step, batch 256 for inference. Targets (paper §4: SE costs about +10% GPU training
time; ours should cost less):

* training step, SE-ResNet-50 / ResNet-50 <= 1.05 (and SE-ResNeXt-50 / ResNeXt-50), fused vs
  reference composition side by side; NCHW for reference;
* our SE-ResNet-50 >= 1.35x timm's seresnet50 throughput (when timm imports);
* inference, batch 256: SE / plain <= 1.05;
* CPU, 2 threads, batch 8, inference: SE-ResNet-50 / ResNet-50 <= 1.03;
* the plain twin is not slower with the fused add+ReLU than with the reference composition.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from senet.cost.speed import benchmark, format_benchmark

GPU = dict(precision="bf16", channels_last=True, rounds=10, steps=10, warmup=5)


def figures(has_timm: bool) -> list[tuple[str, dict, list[tuple[str, str, float, str]]]]:
    """(title, benchmark kwargs, [(mode, ratio key, target, "<=" or ">=")]) for each figure."""
    against = "timm" if has_timm else None
    out = []
    for name, plain in (("se_resnet50", "se_resnet50 without SE"),
                        ("se_resnext50_32x4d", "se_resnext50_32x4d without SE")):
        checks = [("train", f"{name} [fused on] / {plain} [fused on] (time)", 1.05, "<="),
                  # issue item 4: the plain twin with the fused add+ReLU is not slower than before
                  ("train", f"{plain} [fused off] / {plain} [fused on] (time)", 1.0, ">=")]
        if has_timm and name == "se_resnet50":
            checks.append(("train", f"{name} [fused on] / timm seresnet50 (throughput)", 1.35, ">="))
        out.append((f"GPU training step, {name}, batch 128",
                    dict(names=[name], baseline=True, fused="both", mode="train", batch_size=128,
                         against=against if name == "se_resnet50" else None, **GPU), checks))
    out.append(("GPU training step, NCHW, se_resnet50, batch 128",
                dict(names=["se_resnet50"], baseline=True, fused="both", mode="train", batch_size=128,
                     **{**GPU, "channels_last": False}), []))
    out.append(("GPU inference, se_resnet50, batch 256",
                dict(names=["se_resnet50"], baseline=True, fused="both", mode="infer", batch_size=256,
                     against=against, **GPU),
                [("infer", "se_resnet50 [fused on] / se_resnet50 without SE [fused on] (time)", 1.05, "<=")]))
    return out


def cpu_figure() -> tuple[str, dict, list]:
    return ("CPU inference, 2 threads, se_resnet50, batch 8",
            dict(names=["se_resnet50"], baseline=True, mode="infer", batch_size=8, device="cpu",
                 rounds=15, steps=2, warmup=2),
            [("infer", "se_resnet50 / se_resnet50 without SE (time)", 1.03, "<=")])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-only", action="store_true", help="only the CPU figure")
    p.add_argument("--gpu-only", action="store_true", help="only the GPU figures")
    p.add_argument("--out", type=Path, default=None, help="folder for one JSON per figure")
    args = p.parse_args()
    try:
        import timm  # noqa: F401
        has_timm = True
    except Exception:
        has_timm = False
    todo = []
    if not args.cpu_only:
        if torch.cuda.is_available():
            todo += figures(has_timm)
        else:
            print("GPU figures: not run (no CUDA device)")
    if not args.gpu_only:
        todo.append(cpu_figure())
    summary = []
    for i, (title, kwargs, checks) in enumerate(todo):
        if kwargs.get("device") == "cpu":
            torch.set_num_threads(2)
        print(f"\n=== {title}")
        result = benchmark(kwargs.pop("names"), **kwargs)
        print(format_benchmark(result))
        for mode, key, target, op in checks:
            value = result["results"][mode]["ratios"][key]
            ok = value <= target if op == "<=" else value >= target
            summary.append(f"{'PASS' if ok else 'FAIL'}  {key} = {value:.3f}x (target {op} {target})")
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"figure{i}.json").write_text(json.dumps({"title": title, **result}, indent=2))
    print("\n=== targets")
    print("\n".join(summary) or "(none checked)")
    if not has_timm:
        print("timm not importable: the comparison with timm's seresnet50 was not run")


if __name__ == "__main__":
    main()
