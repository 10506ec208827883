"""CPU inference: SE's squeeze taken from the bottleneck's 1x1 expansion input (early) or output (late).

The SE model twice (``Bottleneck.squeeze_early`` on and off, the same weights) and its plain twin,
timed in alternating rounds in one process, so that load on a shared machine hits all three alike.
Prints the median ms per batch, SE/plain with each order (issue 9's CPU target: <= 1.03x for
SE-ResNet-50, batch 8, 2 threads) and late/early.

    python benchmarks/bench_squeeze_cpu.py --model se_resnet50 --threads 2 --batch 8 --size 224 --rounds 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import senet
from senet.models.resnet import Bottleneck


def squeeze_order(model: nn.Module, early: bool) -> nn.Module:
    for block in model.modules():
        if isinstance(block, Bottleneck):
            block.squeeze_early = early
    return model


def measure(model_name: str, threads: int, batch: int, size: int, rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median ms per batch of ``se early``, ``se late`` and ``plain``, in alternating rounds."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    early = senet.create_model(model_name).eval()
    late = squeeze_order(senet.create_model(model_name).eval(), False)
    late.load_state_dict(early.state_dict())
    plain = senet.create_model(model_name, se=None).eval()
    models = {"se early": early, "se late": late, "plain": plain}
    x = torch.randn(batch, early.in_chans, size, size)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        diff = (early(x) - late(x)).abs().max().item()
        for r in range(warmup + rounds):
            order = list(models) if r % 2 == 0 else list(reversed(models))
            for label in order:
                t0 = time.perf_counter()
                models[label](x)
                if r >= warmup:
                    times[label].append(1000 * (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in times.items()}
    med["max abs diff"] = diff
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="se_resnet50")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    med = measure(args.model, args.threads, args.batch, args.size, args.rounds)
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, "
          f"{args.rounds} rounds; early vs late logits: max abs diff {med['max abs diff']:.2g}")
    for k in ("se early", "se late", "plain"):
        print(f"{k:10s} {med[k]:9.1f} ms/batch")
    print(f"SE/plain: early squeeze {med['se early'] / med['plain']:.3f}x, late squeeze "
          f"{med['se late'] / med['plain']:.3f}x; late/early {med['se late'] / med['se early']:.3f}x")


if __name__ == "__main__":
    main()
