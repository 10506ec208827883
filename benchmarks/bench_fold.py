"""CPU speed-up of fold_for_inference: the unfolded and the folded network timed side by side.

Rounds alternate between the two models in one process (so load changes on a shared machine hit
both alike); the figure is the ratio of their median times per batch.

    python benchmarks/bench_fold.py --model se_resnet50 --threads 2 --batch 8 --size 224 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import senet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="se_resnet50")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = senet.create_model(args.model).eval()
    folded = senet.fold_for_inference(model)
    report = folded.fold_report
    x = torch.randn(args.batch, model.in_chans, args.size, args.size)
    times: dict[str, list[float]] = {"unfolded": [], "folded": []}
    with torch.inference_mode():
        diff = (model(x) - folded(x)).abs().max().item()
        for r in range(args.warmup + args.rounds):
            for label, net in (("unfolded", model), ("folded", folded)) if r % 2 == 0 else \
                    (("folded", folded), ("unfolded", model)):
                start = time.perf_counter()
                net(x)
                if r >= args.warmup:
                    times[label].append(time.perf_counter() - start)
    base, fast = statistics.median(times["unfolded"]), statistics.median(times["folded"])
    print(f"{args.model} {args.size}px, batch {args.batch}, {args.threads} threads, {args.rounds} rounds "
          f"(torch {torch.__version__}): {len(report.folded)} BN folded, {len(report.kept_bn)} kept; "
          f"max abs diff {diff:.2g}")
    print(f"unfolded {1000 * base:.1f} ms/batch, folded {1000 * fast:.1f} ms/batch (medians): "
          f"speed-up x{base / fast:.3f}")


if __name__ == "__main__":
    main()
