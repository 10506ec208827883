"""``senet eval CHECKPOINT`` (or ``--checkpoint PATH``): loss, top-1 and top-5 error of a trained network."""

from __future__ import annotations

import argparse
import sys

from .common import add_checkpoint_argument, add_device_argument, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: loss, top-1 and top-5 error",
                       description="Evaluate a checkpoint written by senet train on a dataset's test split "
                                   "(default: the dataset it was trained on).")
    add_checkpoint_argument(p)
    p.add_argument("--data", help="dataset spec (default: the training dataset stored in the checkpoint)")
    p.add_argument("--root", help="download/cache folder for cifar10/cifar100")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="evaluate even when --data has other classes or channels than the checkpoint")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import make_loader
    from ..train import evaluate, load_model
    from ..weights.checkpoint import checkpoint_dataset
    from ..train.datacheck import DataMismatch, checkpoint_data_mismatch

    model, meta = load_model(args.checkpoint)
    data = checkpoint_dataset(meta, args.data, "test", args.root)
    errors, warnings = checkpoint_data_mismatch(meta, data)
    if errors and not args.allow_mismatch:
        raise DataMismatch("; ".join(errors) + ". The error rate would be meaningless; "
                           "--allow-mismatch evaluates anyway")
    for problem in (errors if args.allow_mismatch else []) + warnings:
        print(f"senet eval: warning: {problem}", file=sys.stderr)
    device = resolve_device(args.device)
    loader = make_loader(data, args.batch_size, train=False, device=device)
    m = evaluate(model.to(device), loader)
    print(f"{meta['model']} (epoch {meta.get('epoch', '?')}) on {data.name}, {len(data):,} images:")
    print(f"  loss {m['loss']:.4f}   top-1 error {m['top1_err']:.2f}%   top-5 error {m['top5_err']:.2f}%")
    return 0
