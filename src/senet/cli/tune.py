"""``senet tune MODEL``: time every way to serve MODEL on this CPU (native eager and compiled,
ONNX Runtime, OpenVINO) and record the fastest for ``--backend tuned`` and ``compile="auto"``."""

from __future__ import annotations

import argparse

from .common import add_input_size_argument, add_overrides_argument, add_source_argument, busy_cpu_latency_note

# senet.deploy.tuning.BACKENDS, written out so that `senet tune --help` needs no torch.
BACKENDS = ("native", "onnxruntime", "openvino")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="measure the CPU inference backends for a model and record the fastest",
                       description="Prepare MODEL for inference with every backend installed here (the native path "
                                   "eager and compiled by Inductor, each with and without the SE fold where it applies, "
                                   "ONNX Runtime, OpenVINO), check each against "
                                   "eager PyTorch, time them in interleaved rounds at one batch size, and record the "
                                   "fastest median in the tune file, which --backend tuned (senet predict/eval) and "
                                   "prepare_for_inference(backend='tuned') read. Run it on a quiet machine.")
    add_source_argument(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass to tune for (default 1)")
    add_input_size_argument(p, "the model's own")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, usually the cores)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default 10)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), metavar="BACKEND",
                   help=f"what to measure ({', '.join(BACKENDS)}; default all that are installed)")
    p.add_argument("--no-compile", action="store_true",
                   help="do not measure the Inductor-compiled native path (compiling takes tens of seconds)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the tune file (default $SENET_TUNE_FILE, else ~/.cache/senet/tuned.json)")
    add_overrides_argument(p, "create_model keyword when tuning a model name")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from ..cost.memory import check_memory
    from ..deploy.fast import served_input_size
    from ..deploy.inference import resolve_model
    from ..deploy.tuner import tune
    from ..deploy.tuning import tune_file
    from ..errors import UserInputError

    if args.batch_size < 1 or args.rounds < 1 or (args.threads is not None and args.threads < 1):
        raise UserInputError("--batch-size, --rounds and --threads must be positive integers")
    model = resolve_model(args.source, dict(args.overrides) or None)
    # Refused before the input or any served graph is made, as the export of each backend would allocate it.
    check_memory(model, args.input_size or served_input_size(model, None), args.batch_size)
    choice = tune(model, args.batch_size, input_size=args.input_size, threads=args.threads, rounds=args.rounds,
                  backends=args.backends, compile=not args.no_compile, path=args.out,
                  log=lambda line: print(f"senet tune: {line}", file=sys.stderr))
    print(choice.summary())
    note = busy_cpu_latency_note()
    if note:
        print(f"note: {note}")
    print(f"recorded in {tune_file(args.out)}")
    return 0
