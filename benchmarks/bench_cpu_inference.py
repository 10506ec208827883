"""CPU inference latency of every deployment path, side by side in interleaved rounds.

For each model and batch size: eager PyTorch, the folded channels_last path, that path compiled by
Inductor, the native default (whichever of those two is faster here, as ``compile="auto"`` would
choose), INT8 (PT2E x86, compiled), the ``torch.export`` program loaded back from ``.pt2``, ONNX
Runtime fp32 and static INT8, and timm's eager model where timm imports. Every path runs once per
round, in the same order, so load changes on a shared machine hit all alike; the figure is the
median over rounds. Ratios: to ONNX Runtime fp32 of the same model and batch, and SE/plain (each
path on the first model over the same path on the second).

A proper measurement (quiet machine, docs/deploy.md):

    python benchmarks/bench_cpu_inference.py --models se_resnet50 resnet50 --batches 1 8 --threads 2 --rounds 20
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

import senet
from senet.cost.speed import timm_name
from senet.deploy.fast import prepare_for_inference

PATHS = ("eager", "folded", "compiled", "default", "int8", "export", "ort_fp32", "ort_int8", "timm")
Runner = Callable[[torch.Tensor], object]


def _ort_session(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


def build_runners(name: str, batch: int, size: int, paths: set[str], threads: int, workdir: Path,
                  log: Callable[[str], None]) -> dict[str, Runner]:
    """One callable per requested path for ``name`` at ``batch`` (compile and conversion costs logged)."""
    torch.manual_seed(0)
    model = senet.create_model(name).eval()
    x = torch.randn(batch, model.in_chans, size, size)
    calibration = [torch.randn(8, model.in_chans, size, size) for _ in range(2)]  # speed only: random is fine
    runners: dict[str, Runner] = {}

    def eager(x: torch.Tensor, model: torch.nn.Module = model) -> object:
        with torch.inference_mode():
            return model(x)

    if "eager" in paths:
        runners["eager"] = eager
    if paths & {"folded", "default"}:
        runners["folded"] = prepare_for_inference(model, batch, compile=False, example=x)
    if paths & {"compiled", "default"}:
        start = time.perf_counter()
        runners["compiled"] = prepare_for_inference(model, batch, compile=True, example=x)
        log(f"  {name} batch {batch}: compiled in {time.perf_counter() - start:.0f} s")
    if "int8" in paths:
        from senet.deploy.quantize import quantize_int8

        start = time.perf_counter()
        runners["int8"] = quantize_int8(model, calibration)
        runners["int8"](x)  # compiles
        log(f"  {name} batch {batch}: INT8 quantized and compiled in {time.perf_counter() - start:.0f} s")
    if "export" in paths:
        result = senet.export(model, workdir / f"{name}.pt2", "pt2", input_size=size, dynamic_batch=True)
        program = torch.export.load(str(result.path)).module()
        runners["export"] = lambda x, program=program: eager(x, program)
    if paths & {"ort_fp32", "ort_int8"}:
        onnx = senet.export(model, workdir / f"{name}.onnx", input_size=size, dynamic_batch=True).path
        if "ort_fp32" in paths:
            runners["ort_fp32"] = _ort_session(onnx, threads)
        if "ort_int8" in paths:
            from senet.deploy.quantize import quantize_onnx

            runners["ort_int8"] = _ort_session(quantize_onnx(onnx, workdir / f"{name}.int8.onnx", calibration),
                                               threads)
    if "timm" in paths and importlib.util.find_spec("timm") is not None:
        import timm

        try:
            reference = timm.create_model(timm_name(name)).eval()
            runners["timm"] = lambda x, m=reference: eager(x, m)
        except RuntimeError as e:  # no timm model of that name
            log(f"  timm: {e}")
    return runners


def measure(models: list[str], batches: list[int], size: int, rounds: int, threads: int, paths: set[str],
            log: Callable[[str], None] = print) -> dict[tuple[str, int], dict[str, float]]:
    """``{(model, batch): {path: median ms}}``; ``default`` is the faster of folded and compiled."""
    torch.set_num_threads(threads)
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for batch in batches:
            runners = {(m, p): r for m in models
                       for p, r in build_runners(m, batch, size, paths, threads, Path(tmp), log).items()}
            x = {m: torch.randn(batch, 3, size, size) for m in models}
            for (m, _), run in runners.items():  # warm-up: first calls create kernels and caches
                run(x[m])
            times: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
            for _ in range(rounds):
                for (m, p), run in runners.items():
                    start = time.perf_counter()
                    run(x[m])
                    times[(m, p)].append(1000 * (time.perf_counter() - start))
            for m in models:
                row = {p: statistics.median(times[(mm, p)]) for mm, p in times if mm == m}
                if "folded" in row and "compiled" in row:
                    row["default"] = min(row["folded"], row["compiled"])
                results[(m, batch)] = {p: row[p] for p in PATHS if p in row and p in paths | {"folded", "compiled"}}
    return results


def report(results: dict[tuple[str, int], dict[str, float]], models: list[str]) -> str:
    """A table per batch: ms, ratio to ONNX Runtime fp32, and SE/plain for two models."""
    lines = []
    for (m, batch), row in results.items():
        ort = row.get("ort_fp32")
        lines.append(f"{m}, batch {batch}:")
        for p, ms in row.items():
            ratio = f"  x{ms / ort:.2f} of ort_fp32" if ort else ""
            lines.append(f"  {p:<9} {ms:9.2f} ms{ratio}")
    if len(models) == 2:
        se, plain = models
        for (m, batch), row in results.items():
            other = results.get((plain, batch))
            if m == se and other:
                ratios = ", ".join(f"{p} {row[p] / other[p]:.3f}" for p in row if p in other)
                lines.append(f"{se}/{plain} at batch {batch}: {ratios}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["se_resnet50", "resnet50"],
                   help="an SE model and its plain twin (SE/plain ratios are printed for two)")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="default: all")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}, {args.threads} threads, "
          f"{args.size}px, {args.rounds} rounds (medians, ms per batch)")
    results = measure(args.models, args.batches, args.size, args.rounds, args.threads, set(args.paths))
    print(report(results, args.models))
    return 0


if __name__ == "__main__":
    sys.exit(main())
