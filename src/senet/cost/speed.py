"""Speed of registered models: throughput and latency of inference and of a full training step
(forward, backward, SGD step), side by side in interleaved rounds in one process.

The paper's claim to check is the price of SE (§4: +0.26% FLOPs, about +10% GPU training time for
SE-ResNet-50). ``baseline=True`` times each SE model with its exact plain twin
(``create_model(name, se=None)``) and reports the SE/plain ratio; ``fused="both"`` times the fused
SE operator against the reference PyTorch composition (eager); ``compiled=("default",
"max-autotune")`` adds the same network under ``torch.compile`` in those modes, on the reference
composition that Inductor fuses itself (the baseline a fused operator has to beat, docs/performance.md);
``against="timm"`` adds timm's model of the same architecture. Every model runs in every round, one
after the other, so drifts of clock and temperature hit all of them alike; the median over rounds
is the figure, min/max the spread.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..device import resolve_device
from ..errors import UserInputError
from ..layers.fused_se import set_fused, triton_available, use_fused
from ..factory import create_model
from ..models.registry import get_model_spec
from ..validation import check_choice

__all__ = ["benchmark", "format_benchmark", "timm_name", "MODES", "PRECISIONS", "FUSED", "COMPILE_MODES"]

MODES = ("infer", "train", "both")
PRECISIONS = ("fp32", "bf16", "fp16")
FUSED = ("on", "off", "both")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def timm_name(name: str) -> str:
    """timm's name for one of ours: ``se_resnet50`` -> ``seresnet50``, ``legacy_se_resnet50`` ->
    ``legacy_seresnet50``, ``se_resnext50_32x4d`` -> ``seresnext50_32x4d``; plain names are shared."""
    return name.replace("se_resnext", "seresnext").replace("se_resnet", "seresnet")


@dataclasses.dataclass
class _Entry:
    label: str
    source: str  # "senet" or "timm"
    name: str
    se: bool
    fused: str | None  # "on" / "off" for senet models
    build: Callable[[], nn.Module]
    variant: str = ""  # "fused on", "fused off", "compile <mode>"; "" for timm
    compile_mode: str | None = None  # torch.compile mode of this entry alone


def _entries(names: Sequence[str], baseline: bool, against: str | None, fused: str,
             num_classes: int | None, compiled: Sequence[str] = ()) -> list[_Entry]:

    extra = {} if num_classes is None else {"num_classes": num_classes}
    variants = [f"fused {f}" for f in (("on", "off") if fused == "both" else (fused,))]
    variants += [f"compile {m}" for m in compiled]
    entries: list[_Entry] = []

    def ours(name: str, has_se: bool, variant: str, **kw: Any) -> _Entry:
        suffix = f" [{variant}]" if len(variants) > 1 else ""
        label = (name if not kw else f"{name} without SE") + suffix
        flag = variant == "fused on"  # compiled: the reference composition, which Inductor fuses

        def build() -> nn.Module:
            return set_fused(create_model(name, **kw, **extra), flag)
        mode = variant.split(" ", 1)[1] if variant.startswith("compile") else None
        return _Entry(label, "senet", name, has_se, "on" if flag else "off", build, variant, mode)

    for name in names:
        spec = get_model_spec(name)
        for variant in variants:
            entries.append(ours(name, spec.has_se, variant))
            if baseline and spec.has_se:
                entries.append(ours(name, False, variant, se=None))
        if against == "timm":
            tname = timm_name(name)
            entries.append(_Entry(f"timm {tname}", "timm", tname, spec.has_se, None, _timm_builder(tname, extra)))
            plain = name.replace("legacy_", "").replace("se_", "", 1)
            if baseline and spec.has_se and plain != name:
                entries.append(_Entry(f"timm {timm_name(plain)}", "timm", timm_name(plain), False, None,
                                      _timm_builder(timm_name(plain), extra)))
    return entries


def _timm_builder(tname: str, extra: dict[str, Any]) -> Callable[[], nn.Module]:
    try:
        import timm
    except Exception as err:  # ImportError, or a timm that fails to import with this torch
        raise UserInputError(f"--against timm needs timm, which cannot be imported here ({err}); "
                             f"pip install timm, or leave out --against") from None
    if tname not in timm.list_models():
        raise UserInputError(f"timm has no model {tname!r} to compare with")
    return lambda: timm.create_model(tname, pretrained=False, **extra)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """One model, ready to time: inference (``inference_mode``) or a training step with SGD."""

    def __init__(self, model: nn.Module, mode: str, x: torch.Tensor, precision: str, compile_mode: str | None,
                 backend: str = "inductor") -> None:
        self.mode, self.x, self.device = mode, x, x.device
        self.dtype = _DTYPES.get(precision)
        self.model = model.train(mode == "train")
        if compile_mode is None:
            self.fn: Callable[..., torch.Tensor] = model
        else:  # "default" is torch.compile's own default mode
            self.fn = torch.compile(model, backend=backend, mode=None if compile_mode == "default" else compile_mode)
        self.opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4) \
            if mode == "train" else None
        self.scaler = torch.amp.GradScaler(x.device.type, enabled=self.dtype == torch.float16 and mode == "train")
        with torch.inference_mode(), self._autocast():  # the eager model: no compilation for a shape
            classes = model(x).shape[1]
        self.y = torch.randint(0, classes, (x.shape[0],), device=x.device)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def step(self) -> None:
        if self.opt is None:
            with torch.inference_mode(), self._autocast():
                self.fn(self.x)
            return
        with self._autocast():
            loss = F.cross_entropy(self.fn(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    def time(self, steps: int) -> float:
        """Milliseconds per step over ``steps`` steps (CUDA events on a GPU, else wall clock)."""
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(steps):
                self.step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / steps
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        return 1000 * (time.perf_counter() - t0) / steps


def _stats(ms: list[float], batch: int) -> dict[str, Any]:
    med = statistics.median(ms)
    return {"ms_per_step": ms, "median_ms": med, "min_ms": min(ms), "max_ms": max(ms),
            "spread_pct": 100 * (max(ms) - min(ms)) / med, "images_per_s": 1000 * batch / med}


def _ratios(entries: list[_Entry], stats: dict[str, dict[str, Any]]) -> dict[str, float]:
    """SE/plain time ratios, fused-vs-reference speed-ups, and our throughput over timm's."""
    out: dict[str, float] = {}
    by = {e.label: e for e in entries}
    for e in entries:
        med = stats[e.label]["median_ms"]
        if e.source == "senet" and e.se:
            for p in entries:
                if p.source == e.source and not p.se and p.name == e.name and p.variant == e.variant:
                    out[f"{e.label} / {p.label} (time)"] = med / stats[p.label]["median_ms"]
        if "[fused on]" in e.label and e.label.replace("fused on", "fused off") in by:
            ref = e.label.replace("fused on", "fused off")  # > 1: the fused path is faster
            out[f"{ref} / {e.label} (time)"] = stats[ref]["median_ms"] / med
        if e.source == "timm":
            for o in entries:
                if o.source == "senet" and o.se == e.se and timm_name(o.name) == e.name and o.fused != "off":
                    out[f"{o.label} / {e.label} (throughput)"] = (stats[o.label]["images_per_s"]
                                                                  / stats[e.label]["images_per_s"])
        if e.source == "timm" and e.se:
            for p in entries:
                if p.source == "timm" and not p.se:
                    out[f"{e.label} / {p.label} (time)"] = med / stats[p.label]["median_ms"]
    return out


def benchmark(
    names: Sequence[str] | str,
    *,
    baseline: bool = False,
    against: str | None = None,
    mode: str = "both",
    batch_size: int = 32,
    input_size: tuple[int, int, int] | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    fused: str = "off",
    compiled: Sequence[str] = (),
    compile_backend: str = "inductor",
    device: str | torch.device | None = None,
    rounds: int = 10,
    steps: int = 5,
    warmup: int = 3,
    num_classes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time registered models in interleaved rounds; returns a JSON-ready dict.

    Args:
        names: registered model name(s). baseline: add each SE model's plain twin (``se=None``).
        against: ``"timm"`` adds timm's model of the same architecture (timm must import).
        mode: ``"infer"``, ``"train"`` (forward, backward, SGD step) or ``"both"``.
        batch_size, input_size: the batch; input (C, H, W) defaults to the first model's own.
        precision: ``"fp32"``, or ``"bf16"`` / ``"fp16"`` autocast. channels_last: NHWC memory format.
        compile: ``torch.compile`` each model. fused: the fused SE operator ``"on"``, ``"off"``
            (the reference composition, the default) or ``"both"`` (each model timed both ways;
            the result's ``verdicts`` then say whether the fused path was faster than eager and
            than Inductor here).
        compiled: ``torch.compile`` modes (:data:`COMPILE_MODES`) to time the reference
            composition in besides, each a column of its own; ``compile_backend`` their backend.
        device: default CUDA when available. rounds x steps: timed steps per model, after
            ``warmup`` untimed ones. num_classes: classifier width (default: each model's own).

    The result holds the config, library versions, the device, per-model statistics (ms/step per
    round, median, min, max, images/s) and the ratios.
    """

    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise UserInputError("benchmark: give at least one model name")
    check_choice("mode", mode, MODES)
    check_choice("precision", precision, PRECISIONS)
    check_choice("fused", fused, FUSED)
    compiled = [compiled] if isinstance(compiled, str) else list(compiled)
    for m in compiled:
        check_choice("compiled", m, COMPILE_MODES)
    if len(set(compiled)) != len(compiled):
        raise UserInputError(f"compiled lists a mode twice: {compiled}")
    if against not in (None, "timm"):
        raise UserInputError(f"against={against!r} is not supported; allowed: 'timm'")
    for arg, value, low in (("batch_size", batch_size, 1), ("rounds", rounds, 1), ("steps", steps, 1),
                            ("warmup", warmup, 0)):
        if not isinstance(value, int) or value < low:
            raise UserInputError(f"{arg} must be an integer >= {low}, got {value!r}")
    device = resolve_device(device)  # the forms, and CUDA/MPS present, checked as everywhere
    size = tuple(input_size or get_model_spec(names[0]).input_size)
    entries = _entries(names, baseline, against, fused, num_classes, compiled)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(seed)
    x = torch.randn(batch_size, *size, device=device).contiguous(memory_format=fmt)

    result: dict[str, Any] = {
        "config": dict(models=names, baseline=baseline, against=against, mode=mode, batch_size=batch_size,
                       input_size=list(size), precision=precision, channels_last=channels_last, compile=compile,
                       fused=fused, compiled=compiled, compile_backend=compile_backend, device=str(device),
                       rounds=rounds, steps=steps, warmup=warmup),
        "environment": _environment(device),
        "results": {},
    }
    # Whether the fused kernels run on this device at all (a layout they vectorise: 16 channels).
    fused_here = use_fused(True, torch.zeros(1, 16, 4, 4, device=device).contiguous(memory_format=fmt))
    for m in ("infer", "train") if mode == "both" else (mode,):
        runners = {}
        for e in entries:
            torch.manual_seed(seed)
            model = e.build().to(device, memory_format=fmt)
            mode_ = e.compile_mode if e.compile_mode is not None else ("default" if compile else None)
            runners[e.label] = _Runner(model, m, x, precision, mode_, compile_backend)
        for r in runners.values():
            for _ in range(warmup):
                r.step()
        _sync(device)
        times: dict[str, list[float]] = {label: [] for label in runners}
        for _ in range(rounds):
            for label, r in runners.items():
                times[label].append(r.time(steps))
        stats = {label: _stats(ms, batch_size) for label, ms in times.items()}
        for e in entries:
            stats[e.label].update(source=e.source, model=e.name, se=e.se, fused=e.fused, variant=e.variant,
                                  fused_path=e.fused == "on" and fused_here if e.source == "senet" else None)
        result["results"][m] = {"models": stats, "ratios": _ratios(entries, stats),
                                "se_over_plain": _se_over_plain(entries, stats),
                                "verdicts": _verdicts(entries, stats, fused_here, str(device))}
        del runners
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


def _verdicts(entries: list[_Entry], stats: dict[str, dict[str, Any]], fused_here: bool, device: str) -> list[str]:
    """Whether the fused path was faster than eager PyTorch and than Inductor in this measurement,
    one line per model (only where ``fused="both"`` timed it; the comparison with Inductor needs a
    ``compiled`` column). The kernels have not been timed on a GPU before (docs/performance.md):
    this is the measurement that says whether they pay, on the machine that ran it."""
    out = []
    for e in entries:
        if e.source != "senet" or e.variant != "fused on":
            continue
        twins = {p.variant: p for p in entries if p.source == "senet" and p.name == e.name and p.se == e.se}
        label = e.label.replace(" [fused on]", "")
        if not fused_here:
            out.append(f"{label}: the fused kernels do not run on {device}; 'fused on' timed the reference composition")
            continue
        med = stats[e.label]["median_ms"]
        parts = []
        for variant, what in (("fused off", "eager"), ("compile default", "Inductor")):
            if variant in twins:
                ratio = stats[twins[variant].label]["median_ms"] / med
                parts.append(f"{'faster' if ratio > 1 else 'not faster'} than {what} ({ratio:.3f}x)")
            else:
                parts.append(f"not compared with {what} (time it with "
                             f"{'--fused both' if variant == 'fused off' else '--compiled default'})")
        out.append(f"{label}: fused path " + ", ".join(parts) + f", measured here on {device}")
    return out


def _se_over_plain(entries: list[_Entry], stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """SE/plain time per model and variant (eager fused, eager reference, each compile mode)."""
    out: dict[str, dict[str, float]] = {}
    for e in entries:
        if e.source != "senet" or not e.se:
            continue
        for p in entries:
            if p.source == "senet" and not p.se and p.name == e.name and p.variant == e.variant:
                key = e.variant or "eager"
                out.setdefault(e.name, {})[key] = stats[e.label]["median_ms"] / stats[p.label]["median_ms"]
    return out


def _environment(device: torch.device) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("senet", "triton", "timm"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return {"versions": versions, "device_name": name, "triton_usable": triton_available()}


def format_benchmark(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`benchmark`'s result, one block per mode, ratios below."""
    cfg = result["config"]
    lines = [f"{result['environment']['device_name']}: batch {cfg['batch_size']}, "
             f"{'x'.join(map(str, cfg['input_size']))}, {cfg['precision']}, "
             f"{'channels_last' if cfg['channels_last'] else 'NCHW'}{', compiled' if cfg['compile'] else ''}, "
             f"{cfg['rounds']} rounds x {cfg['steps']} steps"]
    for m, block in result["results"].items():
        lines.append(f"\n{'inference' if m == 'infer' else 'training step (fwd+bwd+SGD)'}")
        width = max(len(k) for k in block["models"]) + 2
        lines.append(f"{'model':<{width}}{'img/s':>10}{'ms/step':>10}{'min':>9}{'max':>9}  fused kernels")
        for label, s in block["models"].items():
            path = {True: "yes", False: "no", None: "-"}[s["fused_path"]]
            lines.append(f"{label:<{width}}{s['images_per_s']:>10.1f}{s['median_ms']:>10.2f}"
                         f"{s['min_ms']:>9.2f}{s['max_ms']:>9.2f}  {path}")
        for k, v in block["ratios"].items():
            lines.append(f"  {k}: {v:.3f}x")
        for name, by in block.get("se_over_plain", {}).items():
            lines.append(f"  SE/plain {name}: " + " | ".join(f"{k} {v:.3f}x" for k, v in by.items()))
        lines += [f"  {v}" for v in block.get("verdicts", [])]
    return "\n".join(lines)
