"""``senet transfer``: fine-tune a trained plain network with and without retrofitted SE (the transfer-learning study)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserInputError
from .sweeps import add_run_arguments, execute


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer", help="fine-tune a pretrained plain network as is and with retrofitted SE (the transfer-learning study)",
        description="Start from a trained plain network (a checkpoint of senet train, or --model + --weights in "
                    "timm's layout), retrofit SE (and optionally BN) after every convolution's activation, and "
                    "fine-tune; compares plain fine-tuning, SE with identity-preserving init and SE with the "
                    "default init over the same seeds, in one table (the transfer-learning study).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH", help="a senet checkpoint (.safetensors) or run directory")
    src.add_argument("--weights", metavar="FILE", help="a weights file for --model (e.g. timm layout)")
    p.add_argument("--model", help="registered plain model the --weights fit")
    p.add_argument("--source", default="timm", help="layout of --weights: timm, legacy or senet (default: timm)")
    p.add_argument("--data", help="dataset to fine-tune on (default: the checkpoint's)")
    p.add_argument("--config", metavar="RECIPE", default="rmsprop_transfer",
                   help="fine-tuning recipe (default: rmsprop_transfer: RMSProp, lr 1e-5)")
    p.add_argument("--reduction", type=float, default=8, help="SE reduction ratio r (default: 8, as in the transfer-learning study)")
    p.add_argument("--bn", action="store_true", help="also insert BN before each SE block (as for VGG-16 in the transfer-learning study)")
    p.add_argument("--no-depthwise", action="store_true", help="skip depthwise convs (SE after pointwise convs only, as for MobileNet in the transfer-learning study)")
    p.add_argument("--out", default=None, help="output directory (default: runs/transfer-<model>)")
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.transfer import transfer_sweep
    from ..factory import read_checkpoint_card
    from ..weights.checkpoint import resolve_checkpoint

    if args.checkpoint:
        weights = str(resolve_checkpoint(args.checkpoint))
        card = read_checkpoint_card(weights)
        if card.retrofit is not None:
            raise UserInputError(f"{args.checkpoint} already has retrofitted blocks; start from a plain network")
        model, source = args.model or card.name, "senet"
        # Classes and channels follow the dataset being fine-tuned on (JSON data: the sweep config takes it).
        overrides = {k: v for k, v in card.to_dict()["overrides"].items() if k not in ("num_classes", "in_chans")}
        data = args.data or card.dataset
    else:
        if not args.model:
            raise UserInputError("--weights needs --model, the registered plain network they fit")
        weights, model, source, overrides, data = args.weights, args.model, args.source, {}, args.data
    sweep = transfer_sweep(model, weights, source=source, overrides=overrides, data=data, recipe=args.config,
                           seeds=list(range(args.seeds or 1)), reduction=args.reduction, bn=args.bn,
                           depthwise=not args.no_depthwise)
    args.seeds = None  # already applied
    return execute(sweep, Path(args.out or f"runs/transfer-{model}"), args, baseline=sweep.cells[0].label)
