"""``senet eval --checkpoint PATH``: loss, top-1 and top-5 error of a trained network."""

from __future__ import annotations

import argparse

import torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint: loss, top-1 and top-5 error",
                       description="Evaluate a checkpoint written by senet train on a dataset's test split "
                                   "(default: the dataset it was trained on).")
    p.add_argument("--checkpoint", required=True, metavar="PATH",
                   help="a .safetensors checkpoint or a run directory (its best checkpoint)")
    p.add_argument("--data", help="dataset spec (default: the training dataset stored in the checkpoint)")
    p.add_argument("--root", help="download/cache folder for cifar10/cifar100")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import make_loader
    from ..train import evaluate, load_model
    from ..train.checkpoint import checkpoint_dataset

    model, meta = load_model(args.checkpoint)
    data = checkpoint_dataset(meta, args.data, "test", args.root)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = make_loader(data, args.batch_size, train=False, device=device)
    m = evaluate(model.to(device), loader)
    print(f"{meta['model']} (epoch {meta.get('epoch', '?')}) on {data.name}, {len(data):,} images:")
    print(f"  loss {m['loss']:.4f}   top-1 error {m['top1_err']:.2f}%   top-5 error {m['top5_err']:.2f}%")
    return 0
