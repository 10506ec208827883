"""INT8 post-training quantization for x86 CPUs, with a policy for the SE gate.

The flow is PyTorch's current one for x86 (docs/deploy.md): ``torch.export`` the network,
``prepare_pt2e`` with the ``X86InductorQuantizer`` (static, per-channel weights), run calibration
batches through the observers, ``convert_pt2e``, then ``torch.compile`` (Inductor, weights
frozen) lowers the quantize/dequantize pairs to oneDNN INT8 kernels. torch 2.13 no longer ships
the PT2E flow in ``torch.ao.quantization``; it lives in ``torchao`` (``pip install
'senet[quantize]'``), imported only when quantizing.

The SE gate (paper §3.2, Eq. 3) is where INT8 hurts: the sigmoid's output scales every channel,
so its rounding error multiplies the whole feature map. :data:`GATE_POLICIES`:

- ``"float"``: the excitation (squeeze, both FCs, gate) stays in fp32; only the convolutions and
  the classifier are INT8. The excitation is a small share of the work (paper §4: +0.26% FLOPs).
- ``"int8"``: the FCs of the excitation are quantized too.
- ``"hard_sigmoid"``: the sigmoid is swapped for the piecewise-linear hard sigmoid of
  Table 12's alternatives (``senet.layers.se.HardSigmoid``), which INT8 represents exactly on
  its linear part; a short fine-tune (:func:`finetune`) recovers the swap's change.

ONNX Runtime users get the same with :func:`quantize_onnx` (static QDQ, calibrated).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..atomic import atomic_path, atomic_write_bytes, check_free_space, check_writable, temporary_path
from ..errors import MissingPathError, UserInputError
from ..layers.fused_se import set_fused
from ..layers.se import GATES, SqueezeExcite
from ..models.card import attach_card, card_of
from ..validation import check_choice
from .exported import card_extra_files
from .fast import compile_frozen, latency_ms, prepare_for_inference
from .optional import INT8_OPS, require

__all__ = ["GATE_POLICIES", "quantize_int8", "QuantizedModel", "swap_gate", "finetune", "top1",
           "quantize_onnx", "QuantizeReport", "quantize_and_measure", "dataset_tensors"]

GATE_POLICIES = ("float", "int8", "hard_sigmoid")


def _require(module: str, why: str) -> Any:
    return require(module, why, "quantize")  # torchao's import-time logging kept quiet


def se_blocks(model: nn.Module) -> list[str]:
    """Qualified names of the SE blocks of ``model``."""
    return [name for name, m in model.named_modules() if isinstance(m, SqueezeExcite)]


def swap_gate(model: nn.Module, gate: str = "hard_sigmoid") -> int:
    """Replace the gate of every SE block of ``model`` (in place) by a fresh ``gate`` of
    ``senet.layers.se.GATES`` (Table 12); returns how many were replaced. The model's card, if
    any, follows (``card.with_se_gate``), so ``card.build()`` builds the swapped gate."""
    check_choice("gate", gate, tuple(GATES))
    blocks = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    for block in blocks:
        block.gate = GATES[gate]()
    card = card_of(model)
    if blocks and card is not None:
        attach_card(model, card.with_se_gate(gate))
    return len(blocks)


def finetune(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 200,
             batch_size: int = 64, lr: float = 0.005, seed: int = 0) -> nn.Module:
    """A few SGD steps (momentum 0.9, cosine-decayed ``lr``) on ``(images, labels)`` in place, to
    adapt a network to a swapped gate; returns it in eval mode. Normalised float images."""
    if steps < 0 or batch_size < 1:
        raise UserInputError(f"steps must be >= 0 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))
        idx = torch.randint(len(labels), (batch_size,), generator=gen)
        x = images[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # the training augmentation's flip
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def _fcs_as_linear(model: nn.Module) -> None:
    """Give every SE block with 1x1-conv FCs ``nn.Linear`` FCs of the same weights (in place): the
    same function (``SqueezeExcite``'s ``fc="linear"``), in the form the x86 quantizer annotates
    (the conv form runs as a matrix product of flattened weights, which it leaves in float)."""
    for block in model.modules():
        if isinstance(block, SqueezeExcite) and block.fc_type == "conv" and block.squeeze_kind != "none":
            for attr in ("fc1", "fc2"):
                conv = getattr(block, attr)
                linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(conv.weight.flatten(1))
                    if conv.bias is not None:
                        linear.bias.copy_(conv.bias)
                setattr(block, attr, linear)
            block.fc_type = "linear"


class QuantizedModel(nn.Module):
    """An INT8 network: the converted PT2E program, run through Inductor (compiled on the first
    call for each input shape) under ``inference_mode``. ``program`` is the uncompiled graph.
    :func:`quantize_int8` attaches the float network's card (``pretrained_cfg``, its view and
    class names, with the gate it was quantized with)."""

    def __init__(self, program: nn.Module, gate_policy: str, compile: bool) -> None:
        super().__init__()
        self.program = program
        self.gate_policy = gate_policy
        # Not a submodule: the compiled wrapper holds ``program`` again.
        compiled = compile_frozen(program) if compile else program
        object.__setattr__(self, "_run", compiled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._run(x.contiguous(memory_format=torch.channels_last))


def quantize_int8(model: nn.Module, calibration: Iterable[torch.Tensor], *, gate_policy: str = "float",
                  compile: bool = True) -> QuantizedModel:
    """Static INT8 PT2E quantization of ``model`` (a copy; x86, oneDNN kernels via Inductor).

    ``calibration`` yields normalised float batches of the network's input size (a few hundred
    images of the serving distribution); the first fixes the example shape. ``gate_policy`` is
    one of :data:`GATE_POLICIES` (module docstring); with ``"hard_sigmoid"`` pass a model whose
    gates were already swapped and fine-tuned (:func:`swap_gate`, :func:`finetune`), or it is
    swapped here without fine-tuning. ``compile=False`` runs the reference (fp32-simulated) graph.
    """
    check_choice("gate_policy", gate_policy, GATE_POLICIES)
    pt2e = _require(INT8_OPS, "INT8 quantization")
    x86 = _require("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "INT8 quantization")
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise UserInputError("calibration gave no batches; pass at least one batch of images")
    net = copy.deepcopy(model).cpu().float().eval()
    set_fused(net, False)
    if gate_policy == "hard_sigmoid" and not any(isinstance(getattr(net.get_submodule(n), "gate", None),
                                                            GATES["hard_sigmoid"]) for n in se_blocks(net)):
        swap_gate(net, "hard_sigmoid")
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    if gate_policy == "float":
        for name in se_blocks(net):
            quantizer.set_module_name_qconfig(name, None)
    else:
        _fcs_as_linear(net)
    batch = torch.export.Dim("batch", min=1)
    graph = torch.export.export(net, (_two_or_more(first),), dynamic_shapes=({0: batch},)).module()
    prepared = pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        prepared(first.float())
        for x in batches:
            prepared(x.float())
    converted = pt2e.convert_pt2e(prepared)
    quantized = QuantizedModel(converted, gate_policy, compile)
    card = card_of(net)  # swap_gate above updated it, as it did the network
    return quantized if card is None else attach_card(quantized, card)


def top1(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
         batch_size: int = 100) -> float:
    """Top-1 accuracy in percent of ``model`` on normalised float ``images``, in batches of
    ``batch_size`` (the last one padded to that size, so a compiled model sees one shape)."""
    correct = 0
    with torch.no_grad():
        for i in range(0, len(labels), batch_size):
            x, y = images[i:i + batch_size], labels[i:i + batch_size]
            pad = batch_size - len(x)
            if pad:
                x = torch.cat([x, x[:1].expand(pad, *x.shape[1:])])
            correct += int((model(x)[:len(y)].argmax(1) == y).sum())
    return 100.0 * correct / max(len(labels), 1)


def _two_or_more(x: torch.Tensor) -> torch.Tensor:
    # torch.export specialises a dimension of size 1, so a dynamic batch needs an example of >= 2.
    return x.float() if x.shape[0] > 1 else x.float().expand(2, *x.shape[1:]).contiguous()


def check_quantized_path(path: str | os.PathLike[str]) -> Path:
    """Check, before any work, that the INT8 program can be saved at ``path`` (a writable ``.pt2``)."""
    path = Path(path)
    if path.suffix != ".pt2":
        raise UserInputError(f"{path}: an INT8 program is saved as a torch.export archive; name it *.pt2")
    return check_writable(path, create_folder=True)


def save_quantized(model: QuantizedModel, example: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Save the INT8 program of ``model`` as a ``torch.export`` archive (``.pt2``, dynamic batch);
    ``torch.export.load`` reads it back once torchao is imported (it registers the INT8 ops).
    The model's card goes into the archive (:func:`senet.deploy.exported.read_card` reads it).
    Written atomically (:mod:`senet.atomic`): a failed save leaves ``path`` as it was."""
    path = check_quantized_path(path)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.program, (_two_or_more(example),), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()  # serialised in memory: torch's writer aborts the process on a full disk
    card = card_of(model)
    torch.export.save(program, buf, extra_files=card_extra_files(card) if card is not None else None)
    atomic_write_bytes(path, buf.getvalue(), suffix=".pt2")
    return path


def onnx_top1(path: str | os.PathLike[str], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100) -> float:
    """Top-1 accuracy in percent of the ONNX file ``path`` run by ONNX Runtime (CPU)."""
    ort = _require("onnxruntime", "running an ONNX model")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return top1(lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0]), images, labels, batch_size)


def dataset_tensors(data: Any, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(network inputs, labels)`` of the first ``limit`` items of a dataset of
    :func:`senet.data.load_dataset`, every image (of either split) through the dataset's
    evaluation view, ``data.eval_view``: a network's own view when the dataset comes from
    :func:`senet.analysis.evaluate.card_dataset` (calibration sees what evaluation sees)."""
    n = len(data) if limit is None else min(int(limit), len(data))
    if hasattr(data, "images"):  # ArrayDataset: uint8 tensors held whole, viewed as one batch
        return data.eval_view(data.images[:n]), data.labels[:n]
    items = [data.sample(i, None) for i in range(n)]  # no generator: the evaluation view
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


@dataclasses.dataclass(frozen=True)
class QuantizeReport:
    """Accuracy and latency before and after INT8 quantization (:func:`quantize_and_measure`)."""

    gate_policy: str
    calibration_images: int
    finetune_steps: int
    eval_images: int
    top1_fp32: float | None  # the network as given, in percent; None: not measured (random weights)
    top1_int8: float | None
    top1_swapped: float | None  # fp32 after the gate swap and fine-tune ("hard_sigmoid" only)
    batch_size: int
    ms_fp32: float  # the fp32 default path (BN folded, channels_last), median per batch
    ms_int8: float
    quantize_seconds: float  # calibration, conversion and the first (compiling) INT8 call

    def summary(self) -> str:
        lines = [f"INT8 (x86, PT2E; SE gate policy {self.gate_policy!r}), calibrated on {self.calibration_images} "
                 f"images" + (f", gate fine-tuned {self.finetune_steps} steps" if self.finetune_steps else "")]
        # Printed as error rates, as every other command prints them (the fields hold accuracies).
        swapped = "" if self.top1_swapped is None else f" (hard-sigmoid fp32 {100 - self.top1_swapped:.2f}%)"
        if self.top1_fp32 is None or self.top1_int8 is None:
            lines.append("top-1 error: not measured: the weights are random (a registered name without trained "
                         "weights); give a checkpoint or run directory for accuracy")
        else:
            lines.append(f"top-1 error on {self.eval_images} images: fp32 {100 - self.top1_fp32:.2f}%{swapped}, "
                         f"INT8 {100 - self.top1_int8:.2f}% ({self.top1_fp32 - self.top1_int8:+.2f} points)")
        lines.append(f"latency at batch {self.batch_size}: fp32 {self.ms_fp32:.1f} ms, INT8 {self.ms_int8:.1f} ms "
                     f"(x{self.ms_fp32 / self.ms_int8:.2f}); quantizing and compiling took "
                     f"{self.quantize_seconds:.0f} s")
        return "\n".join(lines)


def quantize_and_measure(model: nn.Module, calibration: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                         *, gate_policy: str = "float", finetune_data: tuple[torch.Tensor, torch.Tensor] | None = None,
                         finetune_steps: int = 0, batch_size: int = 8, calibration_batch: int = 32,
                         rounds: int = 5, compile: bool = True,
                         accuracy: bool = True) -> tuple[QuantizedModel, QuantizeReport]:
    """Quantize ``model`` (:func:`quantize_int8`) on ``calibration`` images and measure top-1 on
    ``(images, labels)`` and latency at ``batch_size`` before and after (all normalised floats).
    ``accuracy=False`` (random weights, whose accuracy means nothing) measures latency only.

    With ``gate_policy="hard_sigmoid"`` the gate is swapped on a copy and fine-tuned for
    ``finetune_steps`` on ``finetune_data`` (images, labels) before quantizing."""
    check_choice("gate_policy", gate_policy, GATE_POLICIES)
    if len(calibration) == 0 or len(labels) == 0:
        raise UserInputError("quantize_and_measure needs calibration images and evaluation images")
    if finetune_steps and (gate_policy != "hard_sigmoid" or finetune_data is None):
        raise UserInputError("finetune_steps applies to gate_policy='hard_sigmoid' with finetune_data")
    model = model.eval()
    before = top1(model, images, labels, batch_size) if accuracy else None
    source, swapped = model, None
    if gate_policy == "hard_sigmoid":
        with torch.inference_mode(False):
            source = copy.deepcopy(model)
        swap_gate(source, "hard_sigmoid")
        if finetune_steps:
            finetune(source, *finetune_data, steps=finetune_steps)
        swapped = top1(source, images, labels, batch_size) if accuracy else None
    start = time.perf_counter()
    chunks = list(torch.split(calibration, calibration_batch))
    quantized = quantize_int8(source, chunks, gate_policy=gate_policy, compile=compile)
    after = top1(quantized, images, labels, batch_size) if accuracy else None
    quantize_seconds = time.perf_counter() - start
    x = images[:batch_size]
    if len(x) < batch_size:
        x = x.repeat((batch_size + len(x) - 1) // len(x), 1, 1, 1)[:batch_size]
    fp32 = prepare_for_inference(model, batch_size, compile=False, example=x, check=False)
    ms_fp32, ms_int8 = latency_ms([fp32, quantized], x, rounds)
    return quantized, QuantizeReport(gate_policy, len(calibration), finetune_steps, len(labels), before, after,
                                     swapped, batch_size, ms_fp32, ms_int8, quantize_seconds)


def quantize_onnx(source: str | os.PathLike[str], dest: str | os.PathLike[str],
                  calibration: Iterable[torch.Tensor], *, per_channel: bool = True) -> Path:
    """ONNX Runtime static INT8 (QDQ format, signed per-channel weights, unsigned activations) of the
    float ONNX file ``source`` (as :func:`senet.export` writes it), calibrated on ``calibration``
    batches (min/max); writes ``dest`` and returns it."""
    quant = _require("onnxruntime.quantization", "ONNX INT8 quantization")
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise MissingPathError(f"no ONNX file at {source}")
    batches = [x.float().numpy() for x in calibration]
    if not batches:
        raise UserInputError("calibration gave no batches; pass at least one batch of images")

    class _Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict | None:
            x = next(self._items, None)
            return None if x is None else {"input": x}

    # Shape inference and graph optimisation first, as onnxruntime's quantization guide advises.
    # Both files are temporaries beside dest (senet.atomic): dest is replaced only by a whole result.
    check_writable(dest)
    # onnxruntime writes the scratch file from C++, where a full disk is no Python OSError: room
    # for it (about the source's size) and the result is checked first.
    check_free_space(dest, 2 * source.stat().st_size)
    prepared = temporary_path(dest, ".pre.onnx")  # scratch, removed whatever happens
    try:
        with atomic_path(dest, suffix=".onnx") as tmp:
            quant.shape_inference.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quant.quantize_static(str(prepared), str(tmp), _Reader(), quant_format=quant.QuantFormat.QDQ,
                                  per_channel=per_channel, activation_type=quant.QuantType.QUInt8,
                                  weight_type=quant.QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    return dest
