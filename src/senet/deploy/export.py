"""Export a network to ONNX, ``torch.export`` (``.pt2``) or TorchScript, checked against eager PyTorch.

Every export runs on the CPU in eval mode with the reference composition of each block (a fused
GPU path, where a model has one, is switched off first), then is loaded back and run beside the
eager model on random images prepared by the network's own evaluation view (its card's):
onnxruntime for ONNX, ``torch.export.load`` for ``.pt2``, the loaded TorchScript module for
TorchScript. The file appears at ``path`` only once that check has passed.

ONNX, ``.pt2`` and TorchScript files carry the network's card (class names and evaluation view, at
the exported input size) as one versioned JSON record (:mod:`senet.deploy.exported`), so
``senet predict FILE.onnx|FILE.pt2 IMAGES`` labels and prepares images as the network did.

``format="pt2"`` saves an ``ExportedProgram`` (``torch.export.save``), the graph format PyTorch
supports going forward (TorchScript is deprecated upstream); ``format="aoti"`` compiles that
program ahead of time with AOTInductor into a package of native code (also a ``.pt2`` file, run
with ``torch._inductor.aoti_load_package`` or from C++ without Python; minutes to build). See
docs/deploy.md.

ONNX is written by PyTorch's TorchScript-based exporter (``dynamo=False``): it needs no package
beyond onnx/onnxruntime, takes seconds, and handles every family and SE option of the package.
``dynamo=True`` uses the ``torch.export``-based exporter instead (it needs ``onnxscript``).
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..atomic import atomic_path, check_free_space, check_writable
from ..cost.memory import check_memory
from ..data.transforms import EvalView
from ..errors import NotAFileError, SenetError, UserInputError
from ..models.card import ModelCard, default_stats
from .exported import card_extra_files, onnx_with_card
from .optional import require
from .inference import card_or_default, resolve_model

__all__ = ["export", "ExportResult", "ExportCheckError", "FORMATS", "DEFAULT_OPSET", "TOLERANCE", "RTOL",
           "format_for_path", "check_view"]

FORMATS = ("onnx", "pt2", "aoti", "torchscript")
# The format a file name implies, for callers (the CLI) that let the extension choose.
_EXTENSIONS = {".onnx": "onnx", ".pt2": "pt2", ".pt": "torchscript"}
DEFAULT_OPSET = 17  # supported by every onnxruntime release of the last years
TOLERANCE = 1e-4  # max abs difference on fp32 logits ...
# ... plus this fraction of the largest |logit|. fp32 carries ~7 significant digits, so two correct
# runtimes that sum in another order differ in proportion to the values: an untrained
# SE-DenseNet-121, whose unnormalised logits reach ~670, differs by ~1e-3 between onnxruntime and
# PyTorch (and PyTorch fp32 from fp64 by ~2e-3), while logits of a trained scale (|z| < 10) get
# at most 1e-4 + 1e-4.
RTOL = 1e-5


class ExportCheckError(SenetError, ValueError):
    """The exported model's outputs differ from eager PyTorch's by more than the tolerance."""


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and checked."""

    path: Path
    format: str
    input_size: tuple[int, int, int]
    dynamic_batch: bool
    checked_batches: tuple[int, ...]  # empty when check=False
    max_abs_diff: float | None
    tolerance: float
    runtime: str  # what ran the exported file in the check
    rtol: float = RTOL
    logit_scale: float | None = None  # the largest |logit| of eager PyTorch in the check
    view: EvalView | None = None  # the view that prepared the check's images (None when not checked)

    @property
    def allowed(self) -> float | None:
        """The difference the check allowed: ``tolerance + rtol * logit_scale``."""
        return None if self.logit_scale is None else self.tolerance + self.rtol * self.logit_scale

    def summary(self) -> str:
        c, h, w = self.input_size
        batch = "dynamic batch" if self.dynamic_batch else "fixed batch"
        text = f"wrote {self.path} ({self.format}, input Nx{c}x{h}x{w}, {batch})"
        if not self.checked_batches:
            return text + "; not checked"
        sizes = ", ".join(map(str, self.checked_batches))
        return (f"{text}\nchecked with {self.runtime} against eager PyTorch on random input, batch size(s) {sizes}: "
                f"max abs difference {self.max_abs_diff:.3g} on logits up to {self.logit_scale:.3g} in magnitude "
                f"(allowed {self.tolerance:g} + {self.rtol:g} x {self.logit_scale:.3g} = {self.allowed:.3g})")


def _require(module: str, why: str) -> Any:
    return require(module, why, "export")


def _input_size(size: int | Sequence[int] | None, default: Sequence[int]) -> tuple[int, int, int]:
    if size is None:
        size = default
    if isinstance(size, int):
        size = (int(default[0]), size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1:
        raise UserInputError(f"input_size must be S or (C, H, W) with positive entries, got {size}")
    return size  # type: ignore[return-value]


def _reference_path(model: nn.Module) -> None:
    # Export the reference composition: a fused kernel is not expressible in ONNX/TorchScript.
    layers = importlib.import_module("senet.layers")
    set_fused = getattr(layers, "set_fused", None)
    if set_fused is not None:
        set_fused(model, False)


def _silence_expected_warnings() -> None:
    """Inside ``warnings.catch_warnings()``: hide what export warns about by design: tracer notes on
    the models' input-shape checks (Python branches that become constants in the trace) and the
    deprecation of the TorchScript-based tools, which this module chooses knowingly."""
    # Each by its exact message and category: any other warning (another tracer note included)
    # says something about this model and is shown.
    warnings.filterwarnings("ignore", message=r"Converting a tensor to a Python boolean might cause the trace to be "
                            r"incorrect", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX export",
                            category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1", category=UserWarning)


# Each writer serialises into memory (senet.atomic: a native library failing mid-write on a full
# disk aborts the process; the bytes are then written by Python, which raises instead).

def _write_onnx(model: nn.Module, x: torch.Tensor, dynamic_batch: bool, opset: int, dynamo: bool,
                card: ModelCard) -> bytes:
    return onnx_with_card(_onnx_bytes(model, x, dynamic_batch, opset, dynamo), card)


def _onnx_bytes(model: nn.Module, x: torch.Tensor, dynamic_batch: bool, opset: int, dynamo: bool) -> bytes:
    if dynamo:
        _require("onnxscript", "export(..., dynamo=True)")
        shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset, input_names=["input"],
                                    output_names=["logits"], dynamic_shapes=shapes, external_data=False,
                                    verbose=False)
        return program.model_proto.SerializeToString()
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                      output_names=["logits"], dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


def _run_onnx(path: Path) -> Any:
    onnx = _require("onnx", "checking an ONNX export")
    ort = _require("onnxruntime", "checking an ONNX export")
    try:
        onnx.checker.check_model(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnx and onnxruntime raise their own types; say which step failed
        raise ExportCheckError(f"onnxruntime cannot load the ONNX export: {str(e).splitlines()[0]}") from e
    return lambda x: torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def format_for_path(path: str | os.PathLike[str], default: str = "onnx") -> str:
    """The export format a file name implies: ``.onnx``, ``.pt2`` (``torch.export``) or ``.pt``
    (TorchScript); ``default`` for any other name."""
    return _EXTENSIONS.get(Path(path).suffix.lower(), default)


def _write_pt2(model: nn.Module, x: torch.Tensor, dynamic_batch: bool, card: ModelCard) -> bytes:
    # The batch is the only dynamic dimension: the models check their input sizes in Python,
    # which torch.export records as guards on the example's spatial size.
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    program = torch.export.export(model, (x,), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files=card_extra_files(card))
    return buf.getvalue()


def _write_aoti(model: nn.Module, x: torch.Tensor, dynamic_batch: bool) -> bytes:
    # AOTInductor wants a bounded dynamic dimension.
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    program = torch.export.export(model, (x,), dynamic_shapes=shapes)
    buf = io.BytesIO()
    torch._inductor.aoti_compile_and_package(program, package_path=buf)
    return buf.getvalue()


def _run_aoti(path: Path) -> Any:
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as e:  # a corrupt or incompatible package: say which step failed
        raise ExportCheckError(f"aoti_load_package cannot load the AOTInductor package: "
                               f"{str(e).splitlines()[0]}") from e


def _run_pt2(path: Path) -> Any:
    try:
        return torch.export.load(str(path)).module()
    except Exception as e:  # a corrupt or incompatible archive: say which step failed
        raise ExportCheckError(f"torch.export.load cannot load the .pt2 export: {str(e).splitlines()[0]}") from e


def _write_torchscript(model: nn.Module, x: torch.Tensor, card: ModelCard) -> bytes:
    # Tracing records what the Python forward does, so blocks with Python control flow (SE
    # positions, optional shortcuts) export as they run; torch.jit.script would have to compile them.
    traced = torch.jit.trace(model, x, check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files=card_extra_files(card))
    return buf.getvalue()


def export(model: nn.Module | str | os.PathLike[str], path: str | os.PathLike[str], format: str = "onnx", *,
           input_size: int | Sequence[int] | None = None, dynamic_batch: bool = False, opset: int | None = None,
           check: bool = True, tolerance: float = TOLERANCE, rtol: float = RTOL,
           overrides: Mapping[str, Any] | None = None, dynamo: bool = False, seed: int = 0) -> ExportResult:
    """Export ``model`` (a module, a registered name or a checkpoint) to ``path`` as ONNX, a
    ``torch.export`` program (``format="pt2"``), an AOTInductor package (``"aoti"``) or TorchScript.

    Args:
        input_size: (C, H, W) or a side S (default: the model's or checkpoint's own size).
        dynamic_batch: make the batch dimension variable (and check two batch sizes).
        opset: the ONNX opset (default :data:`DEFAULT_OPSET`).
        check: run the saved file beside the eager model on random images (seeded by ``seed``)
            prepared by the card's evaluation view (:func:`check_view`);
            :class:`ExportCheckError` if the largest abs difference exceeds
            ``tolerance + rtol * max|logit|`` (fp32 rounding grows with the values), and then
            nothing is left at ``path``.
        overrides: ``create_model`` keywords when ``model`` is a name (e.g. ``num_classes``).
        dynamo: ONNX only, use the ``torch.export``-based exporter (needs ``onnxscript``).

    A module passed in is copied, so it keeps its device and mode.
    """
    import copy

    if format not in FORMATS:
        raise UserInputError(f"format={format!r} is not supported; allowed values: {', '.join(map(repr, FORMATS))}")
    if dynamo and format != "onnx":
        raise UserInputError("dynamo=True applies to format='onnx' only")
    if not tolerance > 0:
        raise UserInputError(f"tolerance must be positive, got {tolerance}")
    if not rtol >= 0:
        raise UserInputError(f"rtol must be >= 0, got {rtol}")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    path = Path(path)
    if path.is_dir():
        raise NotAFileError(f"{path} is a folder; give the file to write, e.g. {path / ('model.' + {'onnx': 'onnx', 'pt2': 'pt2', 'aoti': 'pt2'}.get(format, 'pt'))}")
    check_writable(path, create_folder=True)  # before the (slow) export
    if format == "onnx":  # fail before the (slow) export if the card's writer or the checker is missing
        _require("onnx", "writing an ONNX file's metadata (the model card)")
        if check:
            _require("onnxruntime", "checking an ONNX export")
    if isinstance(model, nn.Module):
        model = copy.deepcopy(model)
    net = resolve_model(model, overrides).cpu().float().eval()
    _reference_path(net)
    card = card_or_default(net)
    size = _input_size(input_size, card.input_size)  # the card's size unless given
    view = check_view(card, size)
    card = card.with_view(view)  # the card the file carries: the exported input size
    gen = torch.Generator().manual_seed(seed)
    export_batch = 2 if dynamic_batch else 1
    checked = (2, 3) if dynamic_batch else (1,)
    check_memory(net, size, max(checked))  # before the export allocates anything
    x = torch.randn(export_batch, *size, generator=gen)

    with warnings.catch_warnings(), torch.no_grad():
        _silence_expected_warnings()
        if format == "onnx":
            data = _write_onnx(net, x, dynamic_batch, opset, dynamo, card)
        elif format == "pt2":
            data = _write_pt2(net, x, dynamic_batch, card)
        elif format == "aoti":
            data = _write_aoti(net, x, dynamic_batch)
        else:
            data = _write_torchscript(net, x, card)
    check_free_space(path, len(data))
    # torch.export.save/load want the .pt2 ending, whatever name the user gave.
    with atomic_path(path, suffix=".pt2" if format in ("pt2", "aoti") else path.suffix) as tmp:
        tmp.write_bytes(data)
        diff = scale = None
        runtime = ""
        if check:
            if format == "onnx":
                run = _run_onnx(tmp)
                runtime = "onnxruntime"
            elif format == "pt2":
                run = _run_pt2(tmp)
                runtime = "the program loaded by torch.export.load"
            elif format == "aoti":
                run = _run_aoti(tmp)
                runtime = "the AOTInductor package loaded by aoti_load_package"
            else:
                with warnings.catch_warnings():
                    _silence_expected_warnings()
                    loaded = torch.jit.load(str(tmp))

                def run(x: torch.Tensor, loaded: Any = loaded) -> torch.Tensor:
                    # The saved graph as it is: no profiling or fusion passes (slow on a first call).
                    with torch.jit.optimized_execution(False):
                        return loaded(x)
                runtime = "the loaded TorchScript module"
            diff = scale = 0.0
            with torch.no_grad():
                for b in checked:
                    xb = view(_random_images(b, size, gen))
                    got, want = run(xb), net(xb)
                    if tuple(got.shape) != tuple(want.shape):
                        raise ExportCheckError(f"the {format} export gives shape {tuple(got.shape)} for batch {b}, "
                                               f"PyTorch {tuple(want.shape)}")
                    diff = max(diff, (got.float() - want.float()).abs().max().item())
                    scale = max(scale, want.float().abs().max().item())
            if not diff <= tolerance + rtol * scale:
                raise ExportCheckError(f"the {format} export differs from eager PyTorch by {diff:.3g} on logits up "
                                       f"to {scale:.3g} (> tolerance {tolerance:g} + rtol {rtol:g} x {scale:.3g}); "
                                       f"nothing written to {path}")
    return ExportResult(path, format, size, dynamic_batch, checked if check else (), diff, tolerance, runtime,
                        rtol, scale, view if check else None)


def check_view(card: ModelCard, size: tuple[int, int, int]) -> EvalView:
    """The evaluation view that prepares the export check's images: the card's
    (:meth:`ModelCard.eval_transform`), at ``size`` when the caller asked for another input size
    (with the default statistics when the channel count changes)."""
    view = card.eval_transform()
    if size == view.input_size:
        return view
    mean, std = (view.mean, view.std) if size[0] == view.input_size[0] else default_stats(size[0])
    return view.replace(input_size=size, mean=mean, std=std)


def _random_images(batch: int, size: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    # Decoded-image stand-ins, larger than the input and not square, so the view resizes and crops.
    c, h, w = size
    return torch.randint(0, 256, (batch, c, h + h // 2 + 1, w + w // 3 + 2), generator=gen, dtype=torch.uint8)
