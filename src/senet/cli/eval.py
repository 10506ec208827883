"""``senet eval CHECKPOINT`` (or ``--checkpoint PATH``): loss, top-1 and top-5 error of a trained network."""

from __future__ import annotations

import argparse
import sys

from .common import (add_checkpoint_argument, add_device_argument, add_inference_arguments, compile_option,
                     resolve_device)


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
    add_inference_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.datacheck import DataMismatch, checkpoint_data_mismatch
    from ..analysis.evaluate import card_dataset, evaluate
    from ..data import make_loader
    from ..deploy.fast import serving_model
    from ..factory import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    card = ckpt.card
    data = card_dataset(card, args.data, "test", args.root)  # image folders: the card's evaluation view
    errors, warnings = checkpoint_data_mismatch(card, data)
    if errors and not args.allow_mismatch:
        raise DataMismatch("; ".join(errors) + ". The error rate would be meaningless; "
                           "--allow-mismatch evaluates anyway")
    for problem in (errors if args.allow_mismatch else []) + warnings:
        print(f"senet eval: warning: {problem}", file=sys.stderr)
    device = resolve_device(args.device)
    loader = make_loader(data, args.batch_size, train=False, device=device)
    model = serving_model(ckpt.model.to(device), device, max(1, min(args.batch_size, len(data))),
                          compile=compile_option(args.compile), fast=not args.eager, backend=args.backend)
    seen = []  # the images evaluated: an undecodable one is left out of the split, not replaced

    def counted(batches):
        for x, y in batches:
            seen.append(len(y))
            yield x, y

    m = evaluate(model, counted(loader))
    print(f"checkpoint: {ckpt.path} ({'verified' if ckpt.verified else 'NOT verified: it has no content hash'})")
    epoch = ckpt.meta.epoch if ckpt.meta.epoch is not None else "?"
    left_out = len(data) - sum(seen)
    print(f"{card.name} (epoch {epoch}) on {data.name}, {sum(seen):,} images"
          + (f" ({left_out} that cannot be decoded left out)" if left_out else "") + ":")
    top5 = (f"top-5 error {m['top5_err']:.2f}%" if len(card.classes or data.classes) > 5
            else f"(top-5 error not shown: {len(card.classes or data.classes)} classes)")
    print(f"  loss {m['loss']:.4f}   top-1 error {m['top1_err']:.2f}%   {top5}")
    return 0
