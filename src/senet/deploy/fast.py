"""The fastest native CPU inference path: BN folded, channels_last, ``inference_mode``, and
``torch.compile`` (Inductor's CPU backend, weights frozen).

:func:`prepare_for_inference` turns a trained network into a module for serving. Whether it
compiles is decided by a rule, never by a timing taken inside the call, so the same call serves
the same graph on a busy machine and a quiet one (:func:`compile_rule`). Inductor specialises a
compiled graph to its input shape (``dynamic=False``), so only inputs of exactly the prepared
shape and dtype run it; every other input runs the folded eager network, and a recompilation is
an error, never silent. ``backend=`` serves the same folded network through ONNX Runtime or
OpenVINO instead (:mod:`senet.deploy.engines`), or through what ``senet tune`` measured fastest
(:mod:`senet.deploy.tuning`). See docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
import time
import warnings
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from ..errors import UserInputError, UserTypeError
from ..models.card import attach_card, card_of
from ..models.registry import list_models
from .engines import ENGINES, engine_runner, onnx_graph, require_engine
from .fold import fold_for_inference
from .se_fold import fold_se
from .tuning import BACKENDS, TunedChoice, model_name, read_choice, tune_file

__all__ = ["prepare_for_inference", "serving_model", "fast_path_refuses", "FastInference", "InferenceReport",
           "COMPILE_CHOICES", "BACKENDS", "compile_frozen", "compile_rule", "inductor_available", "latency_ms"]

COMPILE_CHOICES = ("auto", True, False)
# Equality with eager: the folded, compiled network reorders fp32 sums (BN folding, fused kernels),
# so it may differ by rounding that grows with the logits, as an export does (deploy/export.py).
TOLERANCE, RTOL = 1e-3, 1e-4


@dataclasses.dataclass(frozen=True)
class InferenceReport:
    """What :func:`prepare_for_inference` chose (times in seconds)."""

    batch_size: int
    input_size: tuple[int, int, int]
    compiled: bool  # whether inputs of the prepared shape run an Inductor-compiled graph
    compile_requested: str  # "auto", "on" or "off"
    compile_seconds: float | None  # the one-time cost of compiling (None: not compiled)
    compile_reason: str  # why it compiled or not (the rule of :func:`compile_rule`, or the caller)
    max_abs_diff: float  # largest difference from the unmodified eval-mode network on the example
    backend: str = "native"  # what serves inputs of the prepared shape: native, onnxruntime, openvino
    any_batch: bool = False  # the backend's graph takes any batch of ``input_size`` (ONNX Runtime)
    threads: int | None = None  # the engine's threads (the native path runs on torch's)
    tuned: bool = False  # backend, compile and SE fold read from what senet tune recorded
    se_folded: int | None = None  # SE units folded into their last convolution (None: not asked)

    def summary(self) -> str:
        c, h, w = self.input_size
        text = f"inference path for batch {self.batch_size} at {c}x{h}x{w}: BN folded"
        if self.backend != "native":
            text += f", served by {self.backend} ({self.threads} threads; other shapes: the folded network)"
        else:
            text += ", channels_last" + (", torch.compile (Inductor)" if self.compiled else ", eager")
            text += f" ({self.compile_reason})"
        if self.se_folded is not None:
            text += f", SE folded into the last convolution of {self.se_folded} units"
        if self.tuned:
            text += ", as recorded by senet tune"
        if self.compile_seconds is not None:
            text += f"; compiling took {self.compile_seconds:.1f} s"
        return text + f"; max abs difference from eager {self.max_abs_diff:.2g}"


Graph = Callable[[torch.Tensor], torch.Tensor]


class FastInference(nn.Module):
    """A folded network run under ``inference_mode``, with a graph (Inductor's compiled graph, or
    an ONNX Runtime / OpenVINO session) for inputs of the prepared shape; every other input runs
    the folded network itself, in channels_last. Made by :func:`prepare_for_inference`; it
    carries the wrapped model's card (``card_of(fast)``, ``fast.pretrained_cfg``)."""

    def __init__(self, net: nn.Module, compiled: Graph | None, report: InferenceReport) -> None:
        super().__init__()
        self.net = net
        # Not a submodule: a compiled wrapper holds ``net`` again, and state_dict keys stay ``net.*``.
        object.__setattr__(self, "_compiled", compiled)
        self.inference_report = report
        card = card_of(net)
        if card is not None:  # predict/export read the card off what they are given
            attach_card(self, card)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self._compiled is not None and self.compiled_for(x):
                if self.inference_report.backend == "native":
                    x = x.contiguous(memory_format=torch.channels_last)
                return self._compiled(x)
            return self.net(x.contiguous(memory_format=torch.channels_last))

    def compiled_for(self, x: torch.Tensor) -> bool:
        """Whether ``x`` goes to the prepared graph: an fp32 CPU tensor with every dimension the
        graph was made for (Inductor compiled it with ``dynamic=False``, OpenVINO for a static
        shape: any other shape would compile another graph); ONNX Runtime takes any batch."""
        report = self.inference_report
        return (x.ndim == 4 and x.dtype == torch.float32 and x.device.type == "cpu"
                and (report.any_batch or x.shape[0] == report.batch_size)
                and tuple(x.shape[1:]) == tuple(report.input_size))


def compile_frozen(module: nn.Module, *, recompile: bool = True,
                   fullgraph: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module`` compiled by Inductor with its weights frozen into the graph (constants folded,
    oneDNN weights pre-packed), for inference only; compiled on the first call per input shape.

    Freezing is switched on around each call rather than through ``torch.compile(options=...)``:
    the option alone does not reach every stage that reads it, and INT8 graphs then fail to lower
    (``onednn.qconv_prepack`` unsupported). The setting is scoped to the call
    (``torch._inductor.config.patch``), so other compiles in the process are unaffected. With
    ``recompile=False`` a call that would compile a second graph raises instead (the serving
    path's guard already keeps other shapes away; this makes a missed guard loud).

    Dynamo keeps one cache per function, not per module: every network of a family shares its
    ``forward``, so each compiled network adds an entry to the same cache, and past
    ``torch._dynamo.config.recompile_limit`` (8) Dynamo would silently run the function eagerly.
    Around this module's calls the limit is raised, and reaching it raises. ``fullgraph=True``
    makes a graph break an error (``torch._dynamo.exc.Unsupported``) instead of a network compiled
    in pieces, whose units Dynamo would then cache per function beside every other network's."""
    from torch._dynamo import config as dynamo_config  # seconds to import: only when compiling
    from torch._inductor import config as inductor_config

    compiled = torch.compile(module, dynamic=False, fullgraph=fullgraph)
    state = {"compiled_once": False}

    def run(x: torch.Tensor) -> torch.Tensor:
        with (inductor_config.patch(freezing=True), _no_recompile(not recompile and state["compiled_once"]),
              dynamo_config.patch(recompile_limit=_CACHE_ENTRIES, accumulated_recompile_limit=_CACHE_ENTRIES,
                                  fail_on_recompile_limit_hit=True)):
            out = compiled(x)
        state["compiled_once"] = True
        return out
    return run


# Compiled graphs one process may hold per function (one per prepared network and input shape).
_CACHE_ENTRIES = 4096


@contextlib.contextmanager
def _no_recompile(strict: bool) -> Iterator[None]:
    if not strict:
        yield
        return
    from torch._dynamo import config as dynamo_config

    with dynamo_config.patch(error_on_recompile=True):
        yield


def inductor_available() -> bool:
    """Whether Inductor can compile for the CPU here: it writes C++ and needs a compiler (``$CXX``,
    or the one Inductor's configuration names)."""
    from torch._inductor import config as inductor_config  # only when the rule is asked

    names = [os.environ.get("CXX", "")] + [c for c in inductor_config.cpp.cxx if c]
    return any(name and shutil.which(name) for name in names)


def compile_rule(model: nn.Module, recorded: bool | None = None) -> tuple[bool, str]:
    """What ``compile="auto"`` does for ``model``, and why: the choice ``senet tune`` recorded for
    it (``recorded``, when there is one); otherwise compile exactly when the network is a
    registered senet network (the ones the compiled path is tested on, ``tests/test_fast_inference.py``)
    and Inductor can compile on this machine (:func:`inductor_available`). The compiled graph was
    the faster at batch 1 and 8 for SE-ResNet-50 and ResNet-50 in every measurement of
    docs/results.md ("CPU inference: every deployment path side by side"); a timing taken here
    would make the served graph depend on the machine's load at that moment."""
    if recorded is not None:
        return recorded, f"compile {'on' if recorded else 'off'} as recorded by senet tune"
    refused = fast_path_refuses(model)
    if refused is not None:
        return False, f"not compiled: {refused}"
    if not inductor_available():
        return False, "not compiled: Inductor finds no C++ compiler"
    return True, "compiled: a registered network and Inductor available"


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


def served_input_size(model: nn.Module, example: torch.Tensor | None) -> tuple[int, int, int]:
    if example is not None:
        return tuple(int(s) for s in example.shape[1:])  # type: ignore[return-value]
    cfg = getattr(model, "pretrained_cfg", None)
    size = getattr(cfg, "input_size", None) or (cfg.get("input_size") if isinstance(cfg, dict) else None)
    if size is not None:
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    side = max(224, int(getattr(model, "min_input_size", 0)))
    return int(getattr(model, "in_chans", 3)), side, side


def prepare_for_inference(model: nn.Module, batch_size: int = 1, *, backend: str = "native",
                          compile: str | bool = "auto", se_fold: bool = False, example: torch.Tensor | None = None,
                          check: bool = True, threads: int | None = None,
                          tune_path: str | os.PathLike[str] | None = None) -> FastInference:
    """The fastest CPU path for ``model`` at ``batch_size`` (the caller's model is untouched).

    BatchNorm is folded into the convolutions (:func:`senet.fold_for_inference`). ``backend``:

    - ``"native"``: weights and inputs channels_last, forward under ``torch.inference_mode``;
      ``compile=False`` stops there, ``True`` also compiles with Inductor (weights frozen into the
      graph, compiled once, here), ``"auto"`` decides by :func:`compile_rule` (no timing).
      ``se_fold=True`` also folds each SE bottleneck's excitation into its last 1x1 convolution
      (:mod:`senet.deploy.se_fold`: no pass over the unit's output for the scaling) in the units
      where that is exact and, at the served size, pays (large maps against the width: the first
      two stages of SE-ResNet-50 at 224 px). Off by default until a measurement decides
      (docs/results.md).
    - ``"onnxruntime"`` or ``"openvino"``: the folded network's ONNX graph run by that engine with
      ``threads`` threads (default ``torch.get_num_threads()``); an optional extra, a missing one
      is a :class:`~senet.errors.MissingExtraError` naming it. ``compile`` does not apply.
    - ``"tuned"``: what ``senet tune`` recorded fastest for this model, batch size, input size and
      thread count in the tune file (``tune_path``, see :func:`senet.deploy.tuning.tune_file`),
      compile and SE fold included;
      a ``UserInputError`` naming the command to run when nothing is recorded.

    The prepared graph runs fp32 CPU inputs of exactly ``(batch_size, *input_size)`` (ONNX
    Runtime: any batch of that size); any other input runs the folded eager network.
    ``example`` is a batch of the shape to serve (default: random images of the model card's
    input size). With ``check=True`` the output on ``example`` must equal the eval-mode model's
    within ``1e-3 + 1e-4 * max|logit|`` (fp32 rounding, every backend), else ``RuntimeError``.
    """
    if not isinstance(model, nn.Module):
        raise UserTypeError(f"prepare_for_inference expects an nn.Module, got {type(model).__name__}")
    if backend not in (*BACKENDS, "tuned"):
        raise UserInputError(f"backend={backend!r} is not supported; allowed values: "
                             f"{', '.join(map(repr, (*BACKENDS, 'tuned')))}")
    if compile not in COMPILE_CHOICES or isinstance(compile, int) and not isinstance(compile, bool):
        raise UserInputError(f"compile={compile!r} is not supported; allowed values: 'auto', True, False")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(se_fold, bool):
        raise UserTypeError(f"se_fold must be True or False, got {se_fold!r}")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise UserInputError(f"threads must be a positive integer, got {threads!r}")
    if example is not None and (example.ndim != 4 or example.shape[0] != batch_size):
        raise UserInputError(f"example must be a batch of {batch_size} images (N, C, H, W), "
                             f"got shape {tuple(example.shape)}")
    size = served_input_size(model, example)
    threads = torch.get_num_threads() if threads is None else threads
    tuned = backend == "tuned"
    if tuned:
        if compile != "auto" or se_fold:
            raise UserInputError("backend='tuned' takes compile and se_fold from the recorded choice; got "
                                 f"compile={compile!r}, se_fold={se_fold!r}")
        choice = _recorded(model, batch_size, size, threads, tune_path)
        backend, compile, se_fold = choice.backend, choice.compile, choice.se_fold
    if backend in ENGINES:
        if compile is True or se_fold:
            raise UserInputError(f"compile=True and se_fold=True apply to backend='native', not {backend!r}")
        require_engine(backend)  # before any work: a missing extra is named at once
    x = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0)) if example is None else example
    x = x.detach().float().cpu()
    reference = None
    if check:
        was_training = model.training
        with torch.no_grad():
            reference = model.eval()(x)
        model.train(was_training)
    net = fold_for_inference(model, example_input=x[:1], check=False).cpu().float()

    graph: Graph | None = None
    compile_seconds = folded_se = None
    requested = {"auto": "auto", True: "on", False: "off"}[compile]
    if backend in ENGINES:
        graph = engine_runner(backend, onnx_graph(net, size), batch_size, size, threads)
        reason = "compile does not apply"
        net = net.to(memory_format=torch.channels_last)
    else:
        folded_se = fold_se(net, x) if se_fold else None
        net = net.to(memory_format=torch.channels_last)
        if compile == "auto":
            recorded = _recorded(model, batch_size, size, threads, tune_path, required=False)
            compile, reason = compile_rule(model, None if recorded is None else recorded.native_compile())
        else:
            reason = f"compile={compile} asked for"
        if compile:
            graph = compile_frozen(net, recompile=False, fullgraph=True)
            start = time.perf_counter()
            with torch.inference_mode():
                try:
                    graph(x.contiguous(memory_format=torch.channels_last))  # the first call compiles
                except torch._dynamo.exc.Unsupported as e:
                    if fast_path_refuses(model) is None:
                        raise  # a registered network must compile as one graph: a bug here
                    raise UserInputError(f"compile=True: Dynamo cannot compile {type(model).__name__} as one "
                                         f"graph ({str(e).strip().splitlines()[0]}); prepare it with "
                                         "compile=False") from None
            compile_seconds = time.perf_counter() - start
    report = InferenceReport(batch_size, size, backend == "native" and graph is not None, requested,
                             compile_seconds, reason, 0.0, backend, backend == "onnxruntime",
                             threads if backend in ENGINES else None, tuned,
                             None if folded_se is None else len(folded_se))
    fast = FastInference(net, graph, report)
    if reference is not None:
        got = fast(x)
        diff = (got.float() - reference.float()).abs().max().item()
        allowed = TOLERANCE + RTOL * reference.abs().max().item()
        if not diff <= allowed:
            raise RuntimeError(f"the prepared {type(model).__name__} ({backend}) differs from eager by {diff:.3g} "
                               f"(> {allowed:.3g}); use backend='native', compile=False, and please report this model")
        fast.inference_report = dataclasses.replace(fast.inference_report, max_abs_diff=diff)
    return fast


def _recorded(model: nn.Module, batch_size: int, size: tuple[int, int, int], threads: int,
              path: str | os.PathLike[str] | None, required: bool = True) -> TunedChoice | None:
    name = model_name(model)
    choice = read_choice(name, batch_size, size, threads, path)
    if choice is None and required:
        c, h, w = size
        card = card_of(model)
        command = (f"senet tune {card.name if card is not None else 'MODEL'} --batch-size {batch_size} "
                   f"--input-size {c}x{h}x{w} --threads {threads}")
        if card is not None and card.overrides:
            command += " with the same --set overrides (or a checkpoint)"
        raise UserInputError(f"backend='tuned': nothing recorded for {name} at batch {batch_size}, input "
                             f"{c}x{h}x{w}, {threads} threads in {tune_file(path)}; measure it first: {command}")
    return choice


def serving_model(model: nn.Module, device: str | torch.device, batch_size: int, *,
                  compile: str | bool = False, fast: bool = True, backend: str = "native") -> nn.Module:
    """The network ``senet predict`` and ``senet eval`` run: on the CPU the prepared path of
    :func:`prepare_for_inference` at ``batch_size`` (``backend`` and ``compile`` as there; compile
    off by default because compiling costs tens of seconds, more than a one-off command saves),
    elsewhere, or with ``fast=False``, ``model`` itself in eval mode (``backend`` must then be
    ``"native"``). Folding reorders fp32 sums, so logits differ from the unmodified network by
    rounding only (docs/deploy.md)."""
    if backend not in (*BACKENDS, "tuned"):
        raise UserInputError(f"backend={backend!r} is not supported; allowed values: "
                             f"{', '.join(map(repr, (*BACKENDS, 'tuned')))}")
    if backend != "native" and compile is True:
        raise UserInputError(f"compile on applies to the native backend, not {backend!r}")
    if not fast or torch.device(device).type != "cpu":
        if backend != "native":
            why = "the network as loaded (eager)" if not fast else f"on {torch.device(device).type}"
            raise UserInputError(f"backend={backend!r} serves on the CPU; it cannot run {why}")
        return model.eval()
    reason = fast_path_refuses(model)
    if reason is not None:  # decided by a check: an error while preparing a network it takes is a bug
        if backend != "native":
            raise UserInputError(f"backend={backend!r} cannot serve this network: {reason}")
        warnings.warn(f"the fast inference path does not apply: {reason}; running it as loaded", stacklevel=2)
        return model.eval()
    return prepare_for_inference(model, batch_size, backend=backend,
                                 compile="auto" if backend == "tuned" else compile if backend == "native" else False,
                                 check=False)


def fast_path_refuses(model: nn.Module) -> str | None:
    """Why :func:`serving_model` runs ``model`` as loaded, or None when it prepares it. The fast
    path is written and tested for the registered networks (``tests/test_fast_inference.py`` runs
    it over the registry); a module of the user's own may do anything in its forward."""
    card = card_of(model)
    if card is None or card.name not in list_models():
        return f"{type(model).__name__} is not a registered senet network"
    return None
