"""``senet export NAME_OR_CHECKPOINT --format onnx|pt2|aoti|torchscript --out FILE``: a checked export."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator

from ..errors import BadFileError, UserInputError
from .common import add_input_size_argument, add_overrides_argument, add_source_argument, output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model or checkpoint (ONNX, torch.export, AOTInductor, TorchScript), checked against PyTorch",
                       description="Export a registered model (random weights unless --set loads some) or a trained "
                                   "checkpoint to ONNX, a torch.export program (.pt2), an AOTInductor package or TorchScript. The file is run beside eager PyTorch on random "
                                   "input (onnxruntime for ONNX, the loaded program or module otherwise) and written only if "
                                   "the largest difference is within the tolerance.")
    add_source_argument(p)
    p.add_argument("--format", choices=("onnx", "pt2", "aoti", "torchscript"), default=None,
                   help="pt2 is a torch.export program, aoti an AOTInductor package of native code (minutes to "
                        "build) (default: from the --out extension, .onnx, .pt2 or .pt; else onnx)")
    p.add_argument("--out", required=True, type=output_file, metavar="FILE",
                   help="the file to write (e.g. model.onnx, model.pt2, model.pt), in an existing folder")
    add_input_size_argument(p, "the model's or checkpoint's own input size")
    p.add_argument("--dynamic-batch", action="store_true", help="variable batch size (checked at two sizes)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 17; the TorchScript-based exporter supports 7-20, --dynamo up to 23)")
    p.add_argument("--dynamo", action="store_true", help="ONNX via the torch.export-based exporter (needs onnxscript)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="allowed abs difference on logits of magnitude <= 1 (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="plus this fraction of the largest |logit|: fp32 rounding grows with the values (default 1e-5)")
    p.add_argument("--no-check", action="store_true", help="skip running the export beside PyTorch")
    add_overrides_argument(p, "create_model keyword for a NAME, e.g. --set num_classes=10 --set se_gate=tanh "
                              "(repeatable)")
    p.set_defaults(func=run)


def _check_opset(opset: int | None, dynamo: bool) -> None:
    try:  # the exporter's own limits (a private module: skipped if it moves)
        from torch.onnx._constants import ONNX_MAX_OPSET, ONNX_MIN_OPSET, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except ImportError:
        return
    top = ONNX_MAX_OPSET if dynamo else ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    if opset is not None and not ONNX_MIN_OPSET <= opset <= top:
        raise UserInputError(f"--opset {opset}: the {'dynamo' if dynamo else 'TorchScript-based'} ONNX exporter supports "
                             f"opsets {ONNX_MIN_OPSET}-{top}" + ("" if dynamo or opset < top else "; --dynamo goes higher"))


@contextlib.contextmanager
def _no_graph_dump() -> Iterator[None]:
    # torch's TorchScript-based exporter switches its C++ log on whatever its setting (it tests the
    # function `_jit_is_onnx_log_enabled`, not its result) and so prints the whole graph on an error.
    import torch

    saved = getattr(torch._C, "_jit_onnx_log", None)
    if saved is None:
        yield
        return
    torch._C._jit_onnx_log = lambda *args: None
    try:
        yield
    finally:
        torch._C._jit_onnx_log = saved


# What each exported file is, by its ending, for the refusal below.
_EXPORTED_KINDS = {".onnx": "an ONNX file", ".pt2": "a torch.export program", ".pt": "a TorchScript archive"}


def _refuse_exported(source: str) -> None:
    """An exported file is what export makes, not what it reads: its graph is fixed (no eager
    network to check it against) and re-exporting it would fail inside the exporter or copy it."""
    from ..deploy.exported import is_exported_file

    if os.path.isfile(source) and is_exported_file(source):
        kind = _EXPORTED_KINDS.get(os.path.splitext(source)[1].lower(), "an exported file")
        raise BadFileError(f"{source} is already exported ({kind}); export the checkpoint or model name it was made "
                           f"from, or use the file as it is (senet predict {source} IMAGES)")


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import export, format_for_path

    _refuse_exported(args.source)  # before any work
    fmt = args.format or format_for_path(args.out)
    if fmt == "onnx":
        _check_opset(args.opset, args.dynamo)
    try:
        # The warnings export expects are hidden there, each by its exact message and category; any
        # other says something about this model and is shown.
        with _no_graph_dump():
            result = export(args.source, args.out, fmt, input_size=args.input_size,
                            dynamic_batch=args.dynamic_batch, opset=args.opset, check=not args.no_check,
                            tolerance=args.tolerance, rtol=args.rtol, overrides=dict(args.overrides) or None,
                            dynamo=args.dynamo)
    except ImportError as e:  # a missing optional extra: one line naming it
        print(f"senet export: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not any(c.__name__ == "OnnxExporterError" for c in type(e).__mro__):
            raise
        # torch's message carries the whole graph; its first clause says what failed.
        reason = str(e).split("[Caused by")[0].strip().splitlines()[0]
        at = f" at --opset {args.opset}" if args.opset is not None else ""
        raise UserInputError(f"the ONNX exporter cannot express this model{at}: {reason}"
                             + ("; try a higher --opset (default 17)" if args.opset is not None else "")) from None
    print(result.summary())
    return 0
