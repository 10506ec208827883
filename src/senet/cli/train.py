"""``senet train``: train a network from a recipe, flags and ``--set key=value`` overrides."""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from ..errors import UserInputError
from .common import add_device_argument, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a network (default: SE-ResNet-20 on the bundled CIFAR-10 subset)",
        description="Train a network and write a run directory: config.yaml, env.json, metrics.csv/jsonl, "
                    "curves.png, report.md, checkpoints/. Settings come from --config (a recipe file or a shipped "
                    "recipe name), then the flags below, then --set overrides. Launch with torchrun for "
                    "DistributedDataParallel.")
    p.add_argument("--config", metavar="RECIPE", default=None,
                   help="recipe YAML path or shipped name (default: bundled, or bundled_gpu on CUDA; see "
                        "senet.train.list_recipes())")
    p.add_argument("--model", help="registered model name (model.name)")
    p.add_argument("--data", help="bundled, fashion-mnist-mini, cifar10, cifar100, synthetic or a folder "
                                  "with train/ and val/ (data.dataset)")
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--batch-size", type=int, help="global batch size (split over ranks)")
    p.add_argument("--lr", type=float, help="initial learning rate (optim.lr)")
    p.add_argument("--seed", type=int, help="random seed (initial weights, batch order, augmentation)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint; "
                                                        "with a larger --epochs the run is extended")
    p.add_argument("--threads", type=int, help="CPU threads for torch (threads; default 0 = torch's default). "
                                               "Results are bit-reproducible only with the same count")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also log the metrics to RUN_DIR/tensorboard (needs the tensorboard package)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (by default a non-empty run directory is refused)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set optim.nesterov=false --set "
                        "model.overrides.se_reduction=8 (repeatable)")
    add_device_argument(p)
    p.set_defaults(func=run)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    pairs = {"model.name": args.model, "data.dataset": args.data, "epochs": args.epochs,
             "batch_size": args.batch_size, "optim.lr": args.lr, "seed": args.seed, "threads": args.threads,
             "tensorboard": args.tensorboard}
    return [f"{k}={v}" for k, v in pairs.items() if v is not None]


def run(args: argparse.Namespace) -> int:
    # Imported here: `senet --help` must not import torch.
    from ..train import NonFiniteLossError, TerminalReporter, apply_overrides, fit, load_config, resume_config
    from ..train.config import check_resume_changes
    from ..train.distributed import barrier, cleanup, setup_from_env
    from ..train.reconcile import has_checkpoint
    from ..train.run import refuse_unused_changes
    from ..train.threads import busy_cpu_note

    overrides = _flag_overrides(args) + list(args.overrides)
    if args.resume:
        if args.config or args.out or args.overwrite:
            raise UserInputError("--resume continues a run with its own config and directory; "
                                 "drop --config/--out/--overwrite (flags and --set still apply, e.g. --epochs)")
        run_cfg = resume_config(args.resume)
        cfg = apply_overrides(run_cfg, overrides)
        if has_checkpoint(args.resume):  # (a run without one starts over: anything may change)
            # e.g. another optimiser or model, or initial weights a resume would not read: refused before any work
            refuse_unused_changes(check_resume_changes(run_cfg, cfg))
        run_dir = args.resume
    ranks, device = setup_from_env(str(resolve_device(args.device)))
    try:
        if not args.resume:
            # No recipe named on CUDA: the GPU variant of the default (the CPU batch leaves a GPU idle).
            gpu_default = args.config is None and device.type == "cuda"
            cfg = load_config("bundled_gpu" if gpu_default else args.config, overrides)
            run_dir = args.out or f"runs/{cfg.model.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            if gpu_default and ranks.is_main:
                print(f"no recipe named, running on CUDA: using recipe bundled_gpu (batch {cfg.batch_size}, "
                      f"lr {cfg.optim.lr:g}, {cfg.epochs} epochs)")
        note = busy_cpu_note(cfg.threads) if device.type == "cpu" and ranks.is_main else None
        if note:
            print(f"note: {note}")
        fit(cfg, run_dir, device=device, resume=bool(args.resume), overwrite=args.overwrite,
            reporter=TerminalReporter())
        # Leave together: rank 0 may still be writing checkpoints and plots, and tearing the gloo
        # group down under it aborts the other rank ("terminate called without an active exception").
        barrier()
    except NonFiniteLossError as e:
        if ranks.is_main:
            print(f"senet train: stopped: {e}", file=sys.stderr)
        return 1
    except ImportError as e:  # an optional extra switched on but not installed (--tensorboard)
        print(f"senet train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # every finished epoch is checkpointed: say how to go on
        if args.debug:
            raise
        if ranks.is_main:
            print(f"senet train: interrupted; resume with: senet train --resume {shlex.quote(str(run_dir))}",
                  file=sys.stderr)
        return 130
    finally:
        cleanup()
    return 0
