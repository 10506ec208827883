"""CPU inference latency of every deployment path, side by side in interleaved rounds.

For each model and batch size: eager PyTorch, the folded channels_last path, that path compiled by
Inductor, the native default (what ``prepare_for_inference(compile="auto")`` serves: its rule, no
timing), the SE fold (``se_fold=True``) eager and compiled, INT8 (PT2E x86, compiled, SE gate in
fp32), the ``torch.export`` program loaded back from ``.pt2``, ONNX Runtime fp32 and static INT8
(QDQ, SE FCs quantized as every other layer), OpenVINO fp32 and INT8 (NNCF's post-training
quantization, its defaults except that MatMuls, the SE FCs and the classifier, stay fp32), and timm's eager model where timm imports. ONNX Runtime and
OpenVINO fp32 run the same ONNX graph of the folded network (``prepare_for_inference(backend=...)``).

Every path runs once per round, in the same order (each path for both models back to back), so
load changes on a shared machine hit all alike; the figure is the median over rounds. Each call
comes ``--gap`` seconds after the last, so that no engine's spinning threads take the next one's
cores. The 1-minute load average is printed before and
after. ``--load`` starts a second process that busy-loops one core, switched on and off in
alternate rounds, and prints each path's slowdown under that load beside its quiet time.
Tables: one per batch size, a row per path, each model's median side by side, SE/plain (the
median over rounds of each round's ratio of the first model to the second, with its quartiles q1
and q3: the spread says whether a difference is resolved) and the first model's ratio to ONNX
Runtime fp32.

The measurement of docs/results.md ("to measure"), on a quiet machine, one command:

    python benchmarks/bench_cpu_inference.py --models se_resnet50 resnet50 --batches 1 8 --threads 2 --rounds 15 --load
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
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
from senet.deploy.fast import compile_rule, prepare_for_inference

PATHS = ("eager", "folded", "compiled", "default", "se_fold", "se_fold_compiled", "int8", "export", "ort_fp32",
         "ort_int8", "ov_fp32", "ov_int8", "timm")
Runner = Callable[[torch.Tensor], object]
STATES = ("quiet", "loaded")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _ort_session(path: Path, batch: int, size: int, threads: int) -> Runner:
    from senet.deploy.engines import engine_runner

    return engine_runner("onnxruntime", path.read_bytes(), batch, (3, size, size), threads)


def _ov_int8(onnx: Path, calibration: list[torch.Tensor], batch: int, size: int, threads: int) -> Runner:
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)  # it lists every node it leaves out, on stdout

    core = ov.Core()
    model = core.read_model(str(onnx))
    # The SE FCs (and the classifier) are MatMuls after the squeeze; NNCF 3.4 fails to collect
    # statistics on their rank-2 inputs, and kept in fp32 they follow the native INT8's gate policy.
    quantized = nncf.quantize(model, nncf.Dataset([c.numpy() for c in calibration]), subset_size=len(calibration),
                              ignored_scope=nncf.IgnoredScope(types=["MatMul"]))
    quantized.reshape([batch, 3, size, size])
    compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                     "NUM_STREAMS": 1})
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> object:
        request.infer({0: x.numpy()})
        return request.get_output_tensor(0).data
    return run


def build_runners(name: str, batch: int, size: int, paths: set[str], threads: int, workdir: Path,
                  log: Callable[[str], None]) -> tuple[dict[str, Runner], dict[str, str]]:
    """One callable per requested path for ``name`` at ``batch`` (compile and conversion costs logged),
    and the paths that are another under a second name (``default``: the one the rule serves)."""
    torch.manual_seed(0)
    model = senet.create_model(name).eval()
    x = torch.randn(batch, model.in_chans, size, size)
    calibration = [torch.randn(8, model.in_chans, size, size) for _ in range(2)]  # speed only: random is fine
    runners: dict[str, Runner] = {}

    def eager(x: torch.Tensor, model: torch.nn.Module = model) -> object:
        with torch.inference_mode():
            return model(x)

    def timed(label: str, make: Callable[[], Runner]) -> Runner:
        start = time.perf_counter()
        runner = make()
        log(f"  {name} batch {batch}: {label} ready in {time.perf_counter() - start:.0f} s")
        return runner

    default_compiles = compile_rule(model)[0]
    if "eager" in paths:
        runners["eager"] = eager
    if "folded" in paths or ("default" in paths and not default_compiles):
        runners["folded"] = prepare_for_inference(model, batch, compile=False, example=x)
    if "compiled" in paths or ("default" in paths and default_compiles):
        runners["compiled"] = timed("compiled", lambda: prepare_for_inference(model, batch, compile=True, example=x))
    if "se_fold" in paths:
        runners["se_fold"] = prepare_for_inference(model, batch, compile=False, se_fold=True, example=x)
    if "se_fold_compiled" in paths:
        runners["se_fold_compiled"] = timed("SE fold compiled", lambda: prepare_for_inference(
            model, batch, compile=True, se_fold=True, example=x))
    if "int8" in paths:
        from senet.deploy.quantize import quantize_int8

        def int8() -> Runner:
            q = quantize_int8(model, calibration)
            q(x)  # compiles
            return q
        runners["int8"] = timed("INT8 quantized and compiled", int8)
    if "export" in paths:
        result = senet.export(model, workdir / f"{name}.pt2", "pt2", input_size=size, dynamic_batch=True)
        program = torch.export.load(str(result.path)).module()
        runners["export"] = lambda x, program=program: eager(x, program)
    if "ort_fp32" in paths:
        runners["ort_fp32"] = prepare_for_inference(model, batch, backend="onnxruntime", example=x, threads=threads)
    if "ov_fp32" in paths:
        if _has("openvino"):
            runners["ov_fp32"] = prepare_for_inference(model, batch, backend="openvino", example=x, threads=threads)
        else:
            log("  ov_fp32: openvino is not installed (pip install 'senet[openvino]'): left out")
    if paths & {"ort_int8", "ov_int8"}:
        onnx = senet.export(model, workdir / f"{name}.onnx", input_size=size, dynamic_batch=True).path
        if "ort_int8" in paths:
            from senet.deploy.quantize import quantize_onnx

            runners["ort_int8"] = _ort_session(quantize_onnx(onnx, workdir / f"{name}.int8.onnx", calibration),
                                               batch, size, threads)
        if "ov_int8" in paths:
            if _has("openvino") and _has("nncf"):
                runners["ov_int8"] = timed("OpenVINO INT8 (NNCF)",
                                           lambda: _ov_int8(onnx, calibration, batch, size, threads))
            else:
                log("  ov_int8: needs openvino and nncf (pip install openvino nncf): left out")
    if "timm" in paths and _has("timm"):
        import timm

        try:
            reference = timm.create_model(timm_name(name)).eval()
            runners["timm"] = lambda x, m=reference: eager(x, m)
        except RuntimeError as e:  # no timm model of that name
            log(f"  timm: {e}")
    aliases = {}
    if "default" in paths:  # the same prepared module: timed once, shown under both names
        aliases["default"] = "compiled" if default_compiles else "folded"
        log(f"  {name}: the native default is {aliases['default']} ({compile_rule(model)[1]})")
    return {p: runners[p] for p in PATHS if p in runners and (p in paths or p in aliases.values())}, aliases


def _spin(active, stop) -> None:  # pragma: no cover - runs in the load process
    """Keep one core busy while ``active`` is set, until ``stop`` is."""
    while not stop.is_set():
        if active.is_set():
            x = 0
            for _ in range(100_000):
                x += 1
        else:
            time.sleep(0.01)


class Load:
    """A second process that busy-loops one core while switched on (``--load``)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self.active, self.stop = ctx.Event(), ctx.Event()
        self.process = ctx.Process(target=_spin, args=(self.active, self.stop), daemon=True)
        self.process.start()

    def set(self, on: bool) -> None:
        (self.active.set if on else self.active.clear)()
        time.sleep(0.2)  # let the scheduler see the change before timing

    def close(self) -> None:
        self.stop.set()
        self.process.join(timeout=5)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


Results = dict[tuple[str, int, str], dict[str, float]]
# (batch, state) -> path -> quartiles of the per-round ratio first model / second model
Paired = dict[tuple[int, str], dict[str, tuple[float, float, float]]]


def measure(models: list[str], batches: list[int], size: int, rounds: int, threads: int, paths: set[str],
            load: bool = False, log: Callable[[str], None] = print, gap: float = 0.0) -> tuple[Results, Paired]:
    """``{(model, batch, state): {path: median ms}}``; ``state`` is "quiet", and with ``load`` also
    "loaded" (rounds alternate between the two, so both see the same drift of the machine). For two
    models, also the quartiles of each round's ratio of the first to the second (SE/plain): the two
    ran moments apart, so the ratio of a round cancels most of the machine's drift."""
    torch.set_num_threads(threads)
    results: Results = {}
    paired: Paired = {}
    states = STATES if load else STATES[:1]
    loader = Load() if load else None
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for batch in batches:
                runners, aliases = {}, {}
                for m in models:
                    built, aliases[m] = build_runners(m, batch, size, paths, threads, Path(tmp), log)
                    runners.update({(m, p): r for p, r in built.items()})
                x = {m: torch.randn(batch, 3, size, size) for m in models}
                for (m, _), run in runners.items():  # warm-up: first calls create kernels and caches
                    run(x[m])
                times: dict[tuple[str, str, str], list[float]] = {(m, p, s): [] for m, p in runners for s in states}
                # Path by path, each model right after the other: a round's SE/plain pairs two calls
                # moments apart.
                first_of = [p for _, p in runners]
                order = sorted(runners, key=lambda key: first_of.index(key[1]))
                for _ in range(rounds):
                    for state in states:
                        if loader is not None:
                            loader.set(state == "loaded")
                        for m, p in order:
                            run = runners[(m, p)]
                            # The last runner's threads (libgomp, ONNX Runtime, OpenVINO: each its own
                            # pool) spin for a while after a call; let them sleep before the next starts.
                            time.sleep(gap)
                            start = time.perf_counter()
                            run(x[m])
                            times[(m, p, state)].append(1000 * (time.perf_counter() - start))
                if loader is not None:
                    loader.set(False)
                for m in models:
                    for state in states:
                        row = {p: statistics.median(times[(m, p, state)]) for mm, p in runners if mm == m}
                        row.update({alias: row[p] for alias, p in aliases[m].items()})
                        results[(m, batch, state)] = {p: row[p] for p in PATHS if p in row and p in paths}
                if len(models) == 2:
                    se, plain = models
                    for state in states:
                        paired[(batch, state)] = {
                            p: _quartiles([a / b for a, b in zip(times[(se, p, state)], times[(plain, p, state)])])
                            for mm, p in runners if mm == se and (plain, p) in runners}
                        for alias, p in aliases[se].items():
                            if p in paired[(batch, state)]:
                                paired[(batch, state)][alias] = paired[(batch, state)][p]
    finally:
        if loader is not None:
            loader.close()
    return results, paired


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def report(results: Results, models: list[str], batches: list[int], paired: Paired | None = None) -> str:
    """A table per batch size: each model's median side by side, SE/plain (the median of the
    per-round ratios, and their quartiles), ratio to ort_fp32, and with a load each path's slowdown
    (loaded / quiet)."""
    paired = paired or {}
    lines = []
    loaded = any(state == "loaded" for _, _, state in results)
    for batch in batches:
        quiet = {m: results.get((m, batch, "quiet"), {}) for m in models}
        first = quiet[models[0]]
        header = f"{'path':<17}" + "".join(f"{m:>14}" for m in models)
        if len(models) == 2:
            header += f"{'SE/plain':>10}{'q1':>7}{'q3':>7}"
        header += f"{'x ort_fp32':>11}"
        if loaded:
            header += "".join(f"{'loaded ' + m:>22}{'slowdown':>10}" for m in models)
        lines += [f"batch {batch} (ms per batch, medians):", header]
        for p in PATHS:
            if p not in first:
                continue
            row = f"{p:<17}" + "".join(f"{quiet[m][p]:14.2f}" if p in quiet[m] else f"{'-':>14}" for m in models)
            if len(models) == 2:
                q = paired.get((batch, "quiet"), {}).get(p)
                row += f"{q[1]:10.3f}{q[0]:7.3f}{q[2]:7.3f}" if q else f"{'-':>10}{'-':>7}{'-':>7}"
            ort = first.get("ort_fp32")
            row += f"{first[p] / ort:11.2f}" if ort else f"{'-':>11}"
            if loaded:
                for m in models:
                    busy = results.get((m, batch, "loaded"), {}).get(p)
                    row += (f"{busy:22.2f}{busy / quiet[m][p]:10.2f}" if busy is not None and p in quiet[m]
                            else f"{'-':>22}{'-':>10}")
            lines.append(row)
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
    p.add_argument("--gap", type=float, default=0.2,
                   help="seconds of rest before each timed call, so that the threads of the previous runner "
                        "(every engine has its own pool, and each spins after a call) are asleep (default 0.2)")
    p.add_argument("--load", action="store_true",
                   help="also time every path while a second process busy-loops one core (alternate rounds)")
    args = p.parse_args(argv)
    before = load_average()
    print(f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"{args.threads} threads, {args.size}px, {args.rounds} interleaved rounds (medians, ms per batch)"
          + (", alternate rounds with one core loaded" if args.load else ""))
    print(f"load average before: {before:.2f}" if before is not None else "load average: unknown")
    results, paired = measure(args.models, args.batches, args.size, args.rounds, args.threads, set(args.paths),
                              args.load, gap=args.gap)
    print(report(results, args.models, args.batches, paired))
    after = load_average()
    if after is not None:
        print(f"load average after: {after:.2f} (the measurement itself adds about {args.threads})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
