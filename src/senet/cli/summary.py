"""``senet summary MODEL [MODEL...] [--baseline] [--bytes]``: parameters, multiply-adds and bytes
moved side by side (docs/cost.md)."""

from __future__ import annotations

import argparse
import json

from ..errors import UserInputError
from .common import add_input_size_argument, add_overrides_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="parameters, multiply-adds and SE overhead of models",
                       description="Count parameters and multiply-adds (paper §4, Tables 2-3).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered model names")
    p.add_argument("--baseline", action="store_true", help="add each SE model's plain baseline (same net, se=None)")
    add_input_size_argument(p, "the model's own, 224 for ImageNet nets, 32 for CIFAR nets")
    add_overrides_argument(p, "create_model keyword for every MODEL, e.g. --set se_reduction=8 "
                              "--set se_squeeze=max --set se_stages=[1,2,3] (repeatable; se=null is the plain net)")
    p.add_argument("--no-parts", action="store_true", help="totals only, no per-stage rows")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--bytes", action="store_true",
                   help="also count bytes read and written (inference, training step; eager and fused SE)")
    p.add_argument("--bytes-dtype", choices=["fp32", "bf16", "fp16"], default="bf16",
                   help="activation and weight dtype of the byte count (default bf16)")
    p.add_argument("--batch-size", type=int, default=1, help="batch of the byte count (default 1)")
    p.add_argument("--channels-last", action="store_true", help="count bytes in channels_last memory format")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch  # here, as the imports below: `senet --help` must not import torch

    from ..cost.counting import complexity, format_complexity
    from ..factory import create_model
    from ..models.registry import get_model_spec

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.bytes_dtype]
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    count = dict(traffic=args.bytes, dtype=dtype, batch=args.batch_size, channels_last=args.channels_last)

    costs = {}
    for name in args.models:
        spec = get_model_spec(name)
        size = args.input_size or spec.input_size
        # Build for the requested input channels (e.g. 1x28x28 grey images).
        extra = {"in_chans": size[0]} if size[0] != spec.input_size[0] else {}
        extra.update(dict(args.overrides))
        label = name + "".join(f" {k}={v}" for k, v in args.overrides)
        costs[label] = complexity(create_model(name, **extra), size, **count)
        if args.baseline and spec.has_se:
            extra = {k: v for k, v in extra.items() if not k.startswith("se_")}
            costs[f"{name} without SE"] = complexity(create_model(name, **{**extra, "se": None}), size, **count)
    if args.json:
        print(json.dumps({k: v.as_dict() for k, v in costs.items()}, indent=2))
    else:
        print(format_complexity(costs, parts=not args.no_parts))
    return 0
