"""``senet excitations CHECKPOINT`` (or ``--checkpoint PATH``): per-class excitation statistics of a
trained SE network (§7.2)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..atomic import check_writable
from ..errors import UserInputError, UserPathError
from .common import add_checkpoint_argument, add_device_argument, resolve_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "excitations", help="per-class excitation statistics, figures and the last-stage removal test (§7.2)",
        description="Record every SE gate over a dataset through hooks and write figures of per-class mean "
                    "excitations, per-block class specificity and near-identity share, and the accuracy with the "
                    "last stage's gates fixed at 1 or at their means.")
    add_checkpoint_argument(p)
    p.add_argument("--data", help="dataset spec (default: the training dataset stored in the checkpoint)")
    p.add_argument("--split", default="test", choices=("train", "test"),
                   help="the dataset split whose images are recorded (default: test)")
    p.add_argument("--root", help="download/cache folder for cifar10/cifar100")
    p.add_argument("--out", help="output directory (default: RUN/excitations, beside the run the checkpoint belongs "
                                 "to, wherever the command is started)")
    p.add_argument("--classes", default=None, help="comma-separated class indices to plot (default: the first 4)")
    p.add_argument("--tol", type=float, default=0.05, help="'near identity' means a gate within TOL of 1")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")
    add_device_argument(p)
    p.set_defaults(func=run)


def default_output(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the study goes unless told: ``excitations`` in the run the checkpoint belongs to (a run
    directory itself, or the run holding ``RUN/checkpoints/X.safetensors``), else beside the file;
    never the current directory, as ``senet report`` writes beside the runs it reports on."""
    path = Path(checkpoint)
    if path.is_dir():
        return path / "excitations"
    folder = path.parent
    return (folder.parent if folder.name == "checkpoints" else folder) / "excitations"


def _check_output(out: Path) -> None:
    # Before loading and recording: the folder, or the nearest one above it that exists, takes files.
    if out.exists() and not out.is_dir():
        raise UserPathError(f"cannot write into {out}: it is a file; give a folder for the study")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    check_writable(existing / "report.md")


def run(args: argparse.Namespace) -> int:
    from ..analysis.evaluate import card_dataset
    from ..analysis.excitation_study import excitation_study
    from ..data import make_loader
    from ..factory import load_model

    out = Path(args.out) if args.out else default_output(args.checkpoint)
    _check_output(out)
    model = load_model(args.checkpoint)
    card = model.pretrained_cfg
    data = card_dataset(card, args.data, args.split, args.root)  # the card's size, mean/std and view
    try:
        show = [int(c) for c in args.classes.split(",")] if args.classes else None
    except ValueError:
        raise UserInputError(f"--classes must be comma-separated integers, got {args.classes!r}") from None
    if show and not all(0 <= c < len(data.classes) for c in show):
        raise UserInputError(f"--classes must lie in 0..{len(data.classes) - 1}, got {show}")
    device = resolve_device(args.device)
    loader = make_loader(data, args.batch_size, train=False, device=device)
    stats, study = excitation_study(model.to(device), loader, data.classes, out,
                                    title=f"{card.name} on {data.name} ({args.split})", show_classes=show,
                                    tol=args.tol)
    print(f"{card.name} on {data.name} ({args.split} split): {len(stats.blocks)} SE blocks")
    for b in stats.blocks:
        print(f"  {b:<24} specificity {stats.specificity[b]:.3f}   near identity {100 * stats.near_identity[b]:5.1f}%")
    print(f"last stage gates learned / fixed at 1 / fixed at mean: top-1 error "
          f"{study['learned']['top1_err']:.2f} / {study['fixed_one']['top1_err']:.2f} / "
          f"{study['fixed_mean']['top1_err']:.2f}%; removing them saves {study['params_saved']:,} parameters")
    print(f"wrote {out}: report.md, excitations.json, class_excitations.png, blocks.png")
    return 0
