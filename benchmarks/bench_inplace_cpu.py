"""CPU inference: the residual unit's end ``act(se(u) + shortcut)`` done in place (what
``senet.models.resnet.merge_branches`` does when no gradient is recorded) against the allocating
composition it replaced, for SE-ResNet-50 and its plain twin, batch 8, 2 threads, interleaved rounds.

    python benchmarks/bench_inplace_cpu.py [--rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import senet.models.resnet as resnet
from senet import create_model

IN_PLACE = resnet.merge_branches


def allocating(se, out, shortcut, act, fused):
    """The composition before in-place inference: every step allocates a new tensor."""
    out = se(out) + shortcut
    return out if act is None else act(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(2)
    models = {f"{kind} {how}": create_model("se_resnet50", **({} if kind == "se" else {"se": None})).eval()
              for kind in ("se", "plain") for how in ("in place", "allocating")}
    x = torch.randn(8, 3, 224, 224)

    def run(label: str) -> float:
        resnet.merge_branches = allocating if label.endswith("allocating") else IN_PLACE
        with torch.inference_mode():
            t0 = time.perf_counter()
            models[label](x)
            return 1000 * (time.perf_counter() - t0)

    times: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        run(k)
    for _ in range(args.rounds):
        for k in models:
            times[k].append(run(k))
    resnet.merge_branches = IN_PLACE
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:20s} {v:9.1f} ms/batch")
    print(f"SE/plain: in place {med['se in place'] / med['plain in place']:.3f}x, "
          f"allocating {med['se allocating'] / med['plain allocating']:.3f}x; "
          f"allocating/in place: SE {med['se allocating'] / med['se in place']:.3f}x, "
          f"plain {med['plain allocating'] / med['plain in place']:.3f}x")


if __name__ == "__main__":
    main()
