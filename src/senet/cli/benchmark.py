"""``senet benchmark NAME [NAME...]``: images/s and ms/step of inference and training steps,
SE against its plain twin (``--baseline``), fused against reference (``--fused both``), against
``torch.compile`` of the reference (``--compiled default max-autotune``), ours against timm
(``--against timm``), all in interleaved rounds in one process."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..errors import UserInputError
from .common import add_input_size_argument, resolve_device

# senet.cost.speed's choices, written out so that `senet benchmark --help` needs no torch (tests/test_cli.py checks
# that they agree).
MODES = ("infer", "train", "both")
PRECISIONS = ("fp32", "bf16", "fp16")
FUSED = ("on", "off", "both")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# What an unset --batch-size, --rounds, --steps and --warmup become, by device.
GPU_DEFAULTS = {"batch_size": 32, "rounds": 10, "steps": 5, "warmup": 3}
CPU_DEFAULTS = {"batch_size": 8, "rounds": 3, "steps": 2, "warmup": 1}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="throughput and latency, SE vs plain, fused vs reference, vs timm",
                       description="Time inference and full training steps (forward, backward, SGD step) of "
                       "registered models in interleaved rounds (the price of SE, paper §4).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="registered model names")
    p.add_argument("--baseline", action="store_true", help="add each SE model's plain twin (se=None) and the ratio")
    p.add_argument("--against", choices=["timm"], default=None, help="add timm's model of the same architecture")
    p.add_argument("--mode", choices=MODES, default="both", help="inference, training step, or both (default)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 32 on a GPU, 8 on the CPU)")
    add_input_size_argument(p, "the model's own")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32, or bf16/fp16 autocast")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format for model and input")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--fused", choices=FUSED, default="off",
                   help="fused SE operator on, off (the reference composition, the default) or both, "
                   "which also says whether the fused path was faster than eager and Inductor here")
    p.add_argument("--compiled", nargs="+", choices=COMPILE_MODES, default=[], metavar="MODE",
                   help="also time torch.compile of the reference composition in these modes "
                   f"({', '.join(COMPILE_MODES)}), each a column with its own SE/plain")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of --compiled (default inductor)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 10 on a GPU, 3 on the CPU)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per model per round (default 5 on a GPU, 2 on the CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per model first (default 3 on a GPU, 1 on "
                                                            "the CPU)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, metavar="OUT", help="write the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cost.memory import check_models_fit  # here: `senet --help` must not import torch
    from ..cost.speed import benchmark, format_benchmark
    from ..device import intra_op_threads
    from ..models.registry import get_model_spec

    if args.threads is not None and args.threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {args.threads}")
    # CPU-sized defaults: the GPU's would take many minutes for a full-size network on a few cores.
    device = resolve_device(args.device)
    sizes = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch_size < 1:
        raise UserInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    # An input that cannot fit is refused before any tensor is made (the input alone may be tens of GiB).
    size = args.input_size or get_model_spec(args.models[0]).input_size
    check_models_fit(args.models, size, args.batch_size, device)
    count = len(args.models) * (2 if args.baseline else 1) + (len(args.models) if args.against else 0)
    print(f"senet benchmark: timing {count} network(s) on {device}, mode {args.mode}: {args.warmup} warm-up + "
          f"{args.rounds} rounds x {args.steps} steps at batch {args.batch_size}", file=sys.stderr)
    with intra_op_threads(args.threads):  # restored afterwards: main() may be called in-process
        result = benchmark(args.models, baseline=args.baseline, against=args.against, mode=args.mode,
                           batch_size=args.batch_size, input_size=args.input_size, precision=args.precision,
                           channels_last=args.channels_last, compile=args.compile, fused=args.fused,
                           compiled=args.compiled, compile_backend=args.compile_backend, device=args.device, rounds=args.rounds, steps=args.steps, warmup=args.warmup)
    print(format_benchmark(result))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json_out, json.dumps(result, indent=2).encode())
    return 0
