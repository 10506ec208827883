"""``senet export NAME_OR_CHECKPOINT --format onnx|pt2|aoti|torchscript --out FILE``: a checked export."""

from __future__ import annotations

import argparse
import sys

from .summary import parse_input_size, parse_override


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model or checkpoint to ONNX or TorchScript, checked against PyTorch",
                       description="Export a registered model (random weights unless --set loads some) or a trained "
                                   "checkpoint to ONNX or TorchScript. The file is run beside eager PyTorch on random "
                                   "input (onnxruntime for ONNX, the loaded module for TorchScript) and written only if "
                                   "the largest difference is within the tolerance.")
    p.add_argument("source", metavar="NAME_OR_CHECKPOINT",
                   help="a registered model name, a .safetensors checkpoint or a run directory")
    p.add_argument("--format", choices=("onnx", "pt2", "aoti", "torchscript"), default=None,
                   help="pt2 is a torch.export program, aoti an AOTInductor package of native code (minutes to "
                        "build) (default: from the --out extension, .onnx, .pt2 or .pt; else onnx)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the file to write (e.g. model.onnx, model.pt2, model.pt)")
    p.add_argument("--input-size", nargs="+", metavar="N", default=None,
                   help="S, CxHxW or C H W (default: the model's or checkpoint's own input size)")
    p.add_argument("--dynamic-batch", action="store_true", help="variable batch size (checked at two sizes)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--dynamo", action="store_true", help="ONNX via the torch.export-based exporter (needs onnxscript)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="allowed abs difference on logits of magnitude <= 1 (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-5,
                   help="plus this fraction of the largest |logit|: fp32 rounding grows with the values (default 1e-5)")
    p.add_argument("--no-check", action="store_true", help="skip running the export beside PyTorch")
    p.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                   help="create_model keyword for a NAME, e.g. --set num_classes=10 --set se_gate=tanh (repeatable)")
    p.set_defaults(func=run)


def parse_size_words(words: list[str] | None) -> tuple[int, int, int] | None:
    """``["224"]``, ``["3x224x224"]`` or ``["3", "224", "224"]`` -> (3, 224, 224)."""
    if not words:
        return None
    text = words[0] if len(words) == 1 else "x".join(words)
    try:
        return parse_input_size(text)
    except argparse.ArgumentTypeError as e:
        raise ValueError(f"--input-size: {e}") from None


def run(args: argparse.Namespace) -> int:
    from ..deploy.export import export, format_for_path

    fmt = args.format or format_for_path(args.out)
    try:
        result = export(args.source, args.out, fmt, input_size=parse_size_words(args.input_size),
                        dynamic_batch=args.dynamic_batch, opset=args.opset, check=not args.no_check,
                        tolerance=args.tolerance, rtol=args.rtol, overrides=dict(args.overrides) or None,
                        dynamo=args.dynamo)
    except ImportError as e:  # a missing optional extra: one line naming it
        print(f"senet export: error: {e}", file=sys.stderr)
        return 2
    print(result.summary())
    return 0
