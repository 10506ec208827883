"""The price of SE on a GPU in one command (``senet.cost.speed``), checked before it is timed.

    python benchmarks/bench_se.py --device cuda --json out.json   # the GPU measurement
    python benchmarks/bench_se.py --device cpu --json out.json    # kernels in Triton's interpreter; CPU figure
    python benchmarks/bench_se.py --all                           # also SE-ResNeXt-50, NCHW, inference, timm

Phase 1, correctness, before any timing: a fixed matrix of cases (:func:`senet.layers.fused_check.matrix`:
every fused op, every input layout a user can hand it, fp32/bf16/fp16, forward and backward, with
and without a shortcut) runs on the device; the fused path must match float64 within the dtype's
rounding with every launch inside its tensors, or not be taken and give PyTorch's result bit for
bit. A mismatch prints FAIL and stops: nothing is timed on kernels that compute the wrong thing.
On the CPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set here).

Phase 2, timing. On CUDA the headline figure times one SGD training step of SE-ResNet-50 and of its
plain twin (bf16 autocast, channels_last, 224x224, batch 128) three ways in interleaved rounds: eager
PyTorch with the reference composition, eager with the fused SE operator, and ``torch.compile``
(Inductor, default mode) of the reference composition, and says whether the fused path was faster
than each. Targets (docs/performance.md):

* fused SE/plain <= 1.10 (the paper, §4, reports about +10% GPU training time for SE-ResNet-50);
* fused SE/plain below eager's SE/plain and below Inductor's SE/plain (a fused operator counts
  only if it beats both).

On the CPU the timing phase is SE-ResNet-50's inference SE/plain with the reference composition (the
fused kernels do not run natively on a CPU). The GPU run is sized to finish within 5 minutes on one
H100/H200, compilation included (``--max-autotune`` adds Inductor's max-autotune column, which takes
longer). Every figure and the PASS/FAIL lines go to one JSON file with the config, versions and device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from senet.cost.speed import benchmark, format_benchmark
from senet.layers import fused_check

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


def correctness(device: torch.device) -> dict[str, Any]:
    """Phase 1: the fixed case matrix on ``device``; stops at the first mismatch."""
    start, cases, taken = time.perf_counter(), 0, 0
    for case in fused_check.matrix():
        op, shape, kind, rkind, dtype, seed = case
        try:
            taken += fused_check.check_case(*case, device)
        except AssertionError as err:
            what = f"{op} {tuple(shape)} {kind} (shortcut {rkind}) {str(dtype).replace('torch.', '')} seed {seed}"
            return {"pass": False, "check": f"correctness: {what}: {str(err).splitlines()[0]}",
                    "cases": cases, "taken": taken, "seconds": time.perf_counter() - start}
        cases += 1
    if not taken:
        return {"pass": False, "check": f"correctness: none of {cases} cases ran the kernels on {device}",
                "cases": cases, "taken": 0, "seconds": time.perf_counter() - start}
    return {"pass": True, "cases": cases, "taken": taken, "seconds": time.perf_counter() - start,
            "check": f"correctness: {cases} cases ({taken} on the kernels) match float64 or take PyTorch's "
                     f"path bit for bit, forward and backward, every launch inside its tensors, on {device}"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="cuda: the GPU measurement; cpu: the kernels in Triton's interpreter and the CPU figure "
                   "(default: cuda when available)")
    p.add_argument("--all", action="store_true", help="also the earlier GPU figures and the CPU one (longer)")
    p.add_argument("--max-autotune", action="store_true", help="also Inductor's max-autotune column")
    p.add_argument("--json", type=Path, default=Path("bench_se.json"), help="output file (default bench_se.json)")
    p.add_argument("--out", type=Path, default=None, help="a folder: write bench_se.json there instead")
    args = p.parse_args(argv)
    if args.out is not None:
        args.json = args.out / "bench_se.json"
    cuda = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda else "cpu")
    if device == "cuda" and not cuda:
        p.error("--device cuda: no CUDA device here")
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        # Triton reads the switch when it is first imported, which torch may already have done:
        # start again with it set.
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
                  {**os.environ, "TRITON_INTERPRET": "1"})
    try:
        import timm  # noqa: F401
        has_timm = True
    except Exception:
        has_timm = False
    start = time.perf_counter()
    report: dict[str, Any] = {"device": device, "figures": [], "targets": []}

    def write() -> None:
        report["seconds"] = time.perf_counter() - start
        args.json.parent.mkdir(parents=True, exist_ok=True)  # written after each phase: nothing is lost
        args.json.write_text(json.dumps(report, indent=2))

    print(f"=== correctness of the fused kernels on {device}", flush=True)
    check = correctness(torch.device(device))
    report["correctness"] = check
    report["targets"].append({"pass": check["pass"], "check": check["check"]})
    print(f"{'PASS' if check['pass'] else 'FAIL'}  {check['check']} ({check['seconds']:.0f} s)", flush=True)
    write()
    if not check["pass"]:
        print("not timed: the fused path must compute the right thing before its speed means anything")
        return 1
    todo = []
    if device == "cuda":
        todo.append(headline(args.max_autotune))
        todo += more_figures(has_timm) if args.all else []
    if device == "cpu" or args.all:
        todo.append(cpu_figure())
    for title, kwargs, checks in todo:
        if kwargs.get("device") == "cpu":
            torch.set_num_threads(2)
        print(f"\n=== {title}", flush=True)
        t0 = time.perf_counter()
        result = benchmark(kwargs.pop("names"), **kwargs)
        print(format_benchmark(result))
        figure_verdicts = evaluate(result, checks)
        report["targets"] += figure_verdicts
        report["figures"].append({"title": title, "seconds": time.perf_counter() - t0, "targets": figure_verdicts,
                                  **result})
        write()
    print(f"\n=== targets ({time.perf_counter() - start:.0f} s, figures in {args.json})")
    print("\n".join(f"{'PASS' if v['pass'] else 'FAIL'}  {v['check']}" for v in report["targets"]))
    return 0 if all(v["pass"] for v in report["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
