"""``senet quantize NAME_OR_CHECKPOINT [--gate float|int8|hard_sigmoid]``: INT8 with top-1 error (trained
weights) and latency before/after (docs/deploy.md)."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserInputError
from .common import add_overrides_argument, add_source_argument, busy_cpu_latency_note


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 post-training quantization (x86), with top-1 error and latency before/after",
                       description="Quantize a trained checkpoint (or a registered model) to INT8 with PyTorch's "
                                   "PT2E flow for x86 (needs torchao: pip install 'senet[quantize]'), calibrated on "
                                   "training images, and report top-1 error on the test split and latency at --batch-size "
                                   "before and after. A registered name has random weights: latency only.")
    add_source_argument(p)
    p.add_argument("--data", default=None,
                   help="dataset spec (default: the checkpoint's training dataset; 'bundled' for a name)")
    p.add_argument("--root", help="download/cache folder for cifar10/cifar100")
    p.add_argument("--gate", choices=("float", "int8", "hard_sigmoid"), default="float",
                   help="SE gate policy: keep the excitation in fp32 (default), quantize it too, or swap in the "
                        "hard sigmoid (Table 12) and fine-tune")
    p.add_argument("--calibration-images", type=int, default=512, metavar="N",
                   help="training images to calibrate on (default 512)")
    p.add_argument("--finetune-steps", type=int, default=None, metavar="N",
                   help="SGD steps after the hard-sigmoid swap (default 300 with --gate hard_sigmoid)")
    p.add_argument("--eval-images", type=int, default=None, metavar="N", help="test images (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="batch of the latency measurement (default 8)")
    p.add_argument("--out", metavar="FILE.pt2", help="also save the INT8 program (torch.export; load with torchao)")
    p.add_argument("--onnx", metavar="FILE.onnx",
                   help="also write ONNX Runtime's static INT8 of the model, calibrated on the same images")
    p.add_argument("--no-compile", action="store_true",
                   help="run the reference INT8 graph without Inductor (fast to start, slow to run)")
    add_overrides_argument(p, "create_model keyword for a NAME (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `senet --help` does not load the quantization stack.
    from ..data import load_dataset
    from ..deploy.export import export
    from ..deploy.inference import looks_like_path, resolve_model
    from ..atomic import check_writable
    from ..deploy.quantize import (check_quantized_path, dataset_tensors, onnx_top1, quantize_and_measure,
                                   quantize_onnx, save_quantized)
    from ..analysis.datacheck import DataMismatch, checkpoint_data_mismatch
    from ..analysis.evaluate import card_dataset

    for flag, value in (("--calibration-images", args.calibration_images), ("--batch-size", args.batch_size),
                        ("--eval-images", args.eval_images)):
        if value is not None and value < 1:
            raise UserInputError(f"{flag} must be >= 1, got {value}")
    steps = args.finetune_steps
    if steps is not None and args.gate != "hard_sigmoid":
        raise UserInputError("--finetune-steps applies to --gate hard_sigmoid")
    steps = (300 if args.gate == "hard_sigmoid" else 0) if steps is None else steps
    # Where the results go is checked before the (minutes of) calibration and evaluation.
    if args.out:
        check_quantized_path(args.out)
    if args.onnx:
        onnx_out = check_writable(args.onnx)
        fp32 = check_writable(onnx_out.with_name(f"{onnx_out.stem}.fp32.onnx"))
    overrides = dict(args.overrides)
    trained = looks_like_path(args.source)
    if trained:
        model = resolve_model(args.source, overrides or None)
        train = card_dataset(model.pretrained_cfg, args.data, "train", args.root)
        test = card_dataset(model.pretrained_cfg, args.data, "test", args.root)
        # as senet eval: data with other classes or channels would make the accuracy meaningless
        errors, warnings = checkpoint_data_mismatch(model.pretrained_cfg, test)
        if errors:
            raise DataMismatch("; ".join(errors) + "; the accuracy would be meaningless")
        for problem in warnings:
            print(f"senet quantize: warning: {problem}", file=sys.stderr)
    else:
        train = load_dataset(args.data or "bundled", "train", root=args.root)
        test = load_dataset(args.data or "bundled", "test", root=args.root)
        overrides.setdefault("num_classes", len(train.classes))
        overrides.setdefault("in_chans", train.input_size[0] if hasattr(train, "input_size") else 3)
        model = resolve_model(args.source, overrides)
    calibration, _ = dataset_tensors(train, args.calibration_images)
    images, labels = dataset_tensors(test, args.eval_images)
    finetune_data = dataset_tensors(train) if steps else None
    try:
        quantized, report = quantize_and_measure(model, calibration, images, labels, gate_policy=args.gate,
                                                 finetune_data=finetune_data, finetune_steps=steps,
                                                 batch_size=args.batch_size, compile=not args.no_compile,
                                                 accuracy=trained)
    except ImportError as e:  # the optional extra is missing: one line naming it
        print(f"senet quantize: error: {e}", file=sys.stderr)
        return 2
    print(f"{model.pretrained_cfg.name} on {test.name}" + ("" if trained else " (random weights: latency only)"))
    print(report.summary())
    note = busy_cpu_latency_note()
    if note:
        print(f"senet quantize: note: {note}", file=sys.stderr)
    if args.out:
        print(f"wrote {save_quantized(quantized, images[:args.batch_size], args.out)}")
    if args.onnx:
        export(model, fp32, "onnx", input_size=tuple(images.shape[1:]), dynamic_batch=True)
        quantize_onnx(fp32, onnx_out, list(calibration.split(32)))
        accuracy = (f"; top-1 error in ONNX Runtime: fp32 {100 - onnx_top1(fp32, images, labels):.2f}%, "
                    f"INT8 {100 - onnx_top1(onnx_out, images, labels):.2f}%") if trained else ""
        print(f"wrote {onnx_out} (ONNX Runtime static INT8; fp32 model at {fp32}){accuracy}")
    return 0
