"""The fastest native CPU inference path: BN folded, channels_last, ``inference_mode``, and
``torch.compile`` (Inductor's CPU backend, weights frozen) where a measurement says it pays.

:func:`prepare_for_inference` turns a trained network into a module for serving. The compiled
variant is chosen per batch size by timing, not by guess: with ``compile="auto"`` the network
is compiled once for that batch size, both variants are timed on the example batch, and the
faster is kept; the compile cost and both timings are in ``.inference_report``. Inductor
specialises a compiled graph to its input shape, so only batches of the calibrated size use
it; any other size runs the folded eager network (no silent recompilation). See docs/deploy.md.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import UserInputError, UserTypeError
from ..models.card import card_of
from ..models.registry import list_models
from .fold import fold_for_inference

__all__ = ["prepare_for_inference", "serving_model", "fast_path_refuses", "FastInference", "InferenceReport",
           "COMPILE_CHOICES", "compile_frozen", "latency_ms"]

COMPILE_CHOICES = ("auto", True, False)
# Equality with eager: the folded, compiled network reorders fp32 sums (BN folding, fused kernels),
# so it may differ by rounding that grows with the logits, as an export does (deploy/export.py).
TOLERANCE, RTOL = 1e-3, 1e-4


@dataclasses.dataclass(frozen=True)
class InferenceReport:
    """What :func:`prepare_for_inference` chose and measured (times in milliseconds per batch)."""

    batch_size: int
    input_size: tuple[int, int, int]
    compiled: bool  # whether batches of ``batch_size`` run the compiled graph
    compile_requested: str  # "auto", "on" or "off"
    compile_seconds: float | None  # the one-time cost of compiling (None: not compiled)
    eager_ms: float | None  # the folded channels_last network, median of the calibration rounds
    compiled_ms: float | None
    max_abs_diff: float  # largest difference from the unmodified eval-mode network on the example

    def summary(self) -> str:
        c, h, w = self.input_size
        text = f"inference path for batch {self.batch_size} at {c}x{h}x{w}: BN folded, channels_last"
        text += ", torch.compile (Inductor)" if self.compiled else ", eager"
        if self.compile_seconds is not None:
            text += f"; compiling took {self.compile_seconds:.1f} s"
        if self.eager_ms is not None and self.compiled_ms is not None:
            text += f"; measured {self.eager_ms:.1f} ms eager vs {self.compiled_ms:.1f} ms compiled per batch"
        return text + f"; max abs difference from eager {self.max_abs_diff:.2g}"


class FastInference(nn.Module):
    """A folded network that runs its input as channels_last under ``inference_mode``, through a
    compiled graph for batches of the calibrated size. Made by :func:`prepare_for_inference`."""

    def __init__(self, net: nn.Module, compiled: Callable[[torch.Tensor], torch.Tensor] | None,
                 report: InferenceReport) -> None:
        super().__init__()
        self.net = net
        # Not a submodule: the compiled wrapper holds ``net`` again, and state_dict keys stay ``net.*``.
        object.__setattr__(self, "_compiled", compiled)
        self.inference_report = report

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self._compiled is not None and self.compiled_for(x):
                return self._compiled(x)
            return self.net(x)

    def compiled_for(self, x: torch.Tensor) -> bool:
        """Whether ``x`` has every dimension and the dtype the graph was compiled for (it was
        compiled with ``dynamic=False``: any other shape would silently compile another)."""
        report = self.inference_report
        return (x.ndim == 4 and x.dtype == torch.float32 and x.shape[0] == report.batch_size
                and tuple(x.shape[1:]) == tuple(report.input_size))


def compile_frozen(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` compiled by Inductor with its weights frozen into the graph (constants folded,
    oneDNN weights pre-packed), for inference only; compiled on the first call per input shape.

    Freezing is switched on around each call rather than through ``torch.compile(options=...)``:
    the option alone does not reach every stage that reads it, and INT8 graphs then fail to lower
    (``onednn.qconv_prepack`` unsupported)."""
    from torch._inductor import config as inductor_config  # seconds to import: only when compiling

    compiled = torch.compile(module, dynamic=False)

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled(x)
    return run


def latency_ms(fns: Sequence[Callable[[torch.Tensor], object]], x: torch.Tensor, rounds: int) -> list[float]:
    """Median milliseconds per call of each of ``fns`` on ``x`` under ``inference_mode``, after one
    warm-up call each (oneDNN creates its primitives on the first), timed in interleaved rounds so
    that load on a shared machine hits every candidate alike."""
    times: list[list[float]] = [[] for _ in fns]
    with torch.inference_mode():
        for fn in fns:
            fn(x)
        for _ in range(rounds):
            for fn, t in zip(fns, times):
                start = time.perf_counter()
                fn(x)
                t.append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def _input_size(model: nn.Module, example: torch.Tensor | None) -> tuple[int, int, int]:
    if example is not None:
        return tuple(int(s) for s in example.shape[1:])  # type: ignore[return-value]
    cfg = getattr(model, "pretrained_cfg", None)
    size = getattr(cfg, "input_size", None) or (cfg.get("input_size") if isinstance(cfg, dict) else None)
    if size is not None:
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    side = max(224, int(getattr(model, "min_input_size", 0)))
    return int(getattr(model, "in_chans", 3)), side, side


def prepare_for_inference(model: nn.Module, batch_size: int = 1, *, compile: str | bool = "auto",
                          example: torch.Tensor | None = None, rounds: int = 3,
                          check: bool = True) -> FastInference:
    """The fastest native CPU path for ``model`` at ``batch_size`` (the caller's model is untouched).

    BatchNorm is folded into the convolutions (:func:`senet.fold_for_inference`), weights and
    inputs are channels_last, and forward runs under ``torch.inference_mode``. ``compile``:
    ``False`` stops there; ``True`` also compiles with Inductor (weights frozen into the graph);
    ``"auto"`` compiles, times both on ``example`` for ``rounds`` rounds after a warm-up, and
    keeps the compiled graph only if it is faster. ``example`` is a batch of the shape to serve
    (default: random images of the model card's input size). With ``check=True`` the output on
    ``example`` must equal the eval-mode model's within fp32 rounding, else ``RuntimeError``.
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"prepare_for_inference expects an nn.Module, got {type(model).__name__}")
    if compile not in COMPILE_CHOICES or isinstance(compile, int) and not isinstance(compile, bool):
        raise UserInputError(f"compile={compile!r} is not supported; allowed values: 'auto', True, False")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if example is not None and (example.ndim != 4 or example.shape[0] != batch_size):
        raise UserInputError(f"example must be a batch of {batch_size} images (N, C, H, W), "
                             f"got shape {tuple(example.shape)}")
    if rounds < 1:
        raise UserInputError(f"rounds must be >= 1, got {rounds}")
    size = _input_size(model, example)
    x = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0)) if example is None else example
    x = x.detach().float().cpu()
    reference = None
    if check:
        was_training = model.training
        with torch.no_grad():
            reference = model.eval()(x)
        model.train(was_training)
    net = fold_for_inference(model, example_input=x[:1], check=False).cpu().float()
    net = net.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)

    compiled = None
    compile_seconds = eager_ms = compiled_ms = None
    if compile is not False:
        compiled = compile_frozen(net)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(xc)  # the first call compiles
        compile_seconds = time.perf_counter() - start
        if compile == "auto":
            eager_ms, compiled_ms = latency_ms([net, compiled], xc, rounds)
            if compiled_ms >= eager_ms:
                compiled = None
    requested = {"auto": "auto", True: "on", False: "off"}[compile]
    fast = FastInference(net, compiled, InferenceReport(batch_size, size, compiled is not None, requested,
                                                        compile_seconds, eager_ms, compiled_ms, 0.0))
    if reference is not None:
        got = fast(x)
        diff = (got.float() - reference.float()).abs().max().item()
        allowed = TOLERANCE + RTOL * reference.abs().max().item()
        if not diff <= allowed:
            raise RuntimeError(f"the prepared {type(model).__name__} differs from eager by {diff:.3g} "
                               f"(> {allowed:.3g}); use compile=False, and please report this model")
        fast.inference_report = dataclasses.replace(fast.inference_report, max_abs_diff=diff)
    return fast


def serving_model(model: nn.Module, device: str | torch.device, batch_size: int, *,
                  compile: str | bool = False, fast: bool = True) -> nn.Module:
    """The network ``senet predict`` and ``senet eval`` run: on the CPU the prepared fast path of
    :func:`prepare_for_inference` at ``batch_size`` (``compile`` as there; off by default because
    compiling costs tens of seconds, more than a one-off command saves), elsewhere, or with
    ``fast=False``, ``model`` itself in eval mode. Folding reorders fp32 sums, so logits differ from
    the unmodified network by rounding only (docs/deploy.md)."""
    if not fast or torch.device(device).type != "cpu":
        return model.eval()
    reason = fast_path_refuses(model)
    if reason is not None:  # decided by a check: an error while preparing a network it takes is a bug
        warnings.warn(f"the fast inference path does not apply: {reason}; running it as loaded", stacklevel=2)
        return model.eval()
    return prepare_for_inference(model, batch_size, compile=compile, check=False)


def fast_path_refuses(model: nn.Module) -> str | None:
    """Why :func:`serving_model` runs ``model`` as loaded, or None when it prepares it. The fast
    path is written and tested for the registered networks (``tests/test_fast_inference.py`` runs
    it over the registry); a module of the user's own may do anything in its forward."""
    card = card_of(model)
    if card is None or card.name not in list_models():
        return f"{type(model).__name__} is not a registered senet network"
    return None
