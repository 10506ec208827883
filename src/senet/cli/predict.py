"""``senet predict CHECKPOINT_OR_NAME INPUT...``: the top-k classes of image files, folders and globs."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserInputError
from .common import add_inference_arguments, add_overrides_argument, compile_option, output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images, folders or globs with a checkpoint (top-k with probabilities)",
                       description="Decode each image (Pillow), resize it to the network's input, normalise with the "
                                   "training data's mean/std and print the top-k classes. INPUTs are files, folders "
                                   "(searched recursively) and globs (quote them to let senet expand them, ** too). "
                                   "An unreadable image is reported on stderr and skipped.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="CHECKPOINT_OR_NAME first (a .safetensors file, a run directory, a model name with "
                        "published weights, or an .onnx/.pt2/.pt file senet export wrote: its card gives the labels "
                        "and view), then images, folders or globs; with --checkpoint, only images")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="the checkpoint (or run directory); then every INPUT is an image, folder or glob")
    p.add_argument("--top-k", "--top", dest="top_k", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--out", default=None, type=output_file, metavar="FILE",
                   help="also write the predictions to FILE (.csv or .json), in an existing folder")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cpu)")
    add_overrides_argument(p, "create_model keyword when predicting with a model name")
    add_inference_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..deploy.predict import format_predictions, predict_paths, write_predictions

    if args.checkpoint is not None:
        source, inputs = args.checkpoint, args.inputs
    elif len(args.inputs) < 2:
        raise UserInputError("give a checkpoint (or model name) and at least one image, folder or glob")
    else:
        source, inputs = args.inputs[0], args.inputs[1:]
    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise UserInputError(f"--out {args.out}: the extension must be .csv or .json")
    skipped = []

    def report(path, reason):  # one line per unreadable image, and carry on
        skipped.append(path)
        print(f"senet predict: skipped {path}: {reason}", file=sys.stderr)

    predictions = predict_paths(source, inputs, top_k=args.top_k, batch_size=args.batch_size, device=args.device,
                                overrides=dict(args.overrides) or None, on_skip=report,
                                fast=not args.eager, compile=compile_option(args.compile),
                                backend=args.backend)
    if predictions:
        print(format_predictions(predictions))
    if not predictions:
        print("senet predict: error: no image could be read" + (f"; {args.out} left as it was" if args.out else ""),
              file=sys.stderr)
        return 2
    if args.out:  # only with predictions to write: a command that predicted nothing replaces no file
        write_predictions(predictions, args.out)
        print(f"wrote {len(predictions)} prediction(s) to {args.out}", file=sys.stderr)
    return 1 if skipped else 0
