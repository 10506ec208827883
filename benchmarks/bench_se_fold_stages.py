"""Where the SE fold pays: SE-ResNet-50 compiled with the fold in chosen stages, beside ResNet-50.

Every network is BN-folded, channels_last and compiled by Inductor with frozen weights (the native
default's graph, ``senet.deploy.fast.compile_frozen``). The SE fold (``senet.deploy.se_fold``)
replaces the units of the named stages whatever their map size (their ``folds_at`` threshold set
to 0 so that each stage can be measured); "rule" is what
``prepare_for_inference(se_fold=True)`` serves. Rounds are interleaved; the table gives each
network's median and minimum in ms and their ratio to ResNet-50 (SE/plain).

    python benchmarks/bench_se_fold_stages.py --batches 1 8 --threads 2 --rounds 15
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import senet
from senet.deploy import se_fold
from senet.deploy.fast import compile_frozen
from senet.deploy.fold import fold_for_inference

POLICIES = {"no fold": (), "stage 1": ("layer1",), "stages 1-2": ("layer1", "layer2"),
            "all stages": ("layer1", "layer2", "layer3", "layer4"), "rule": None}


def _folded(model: torch.nn.Module, stages: tuple[str, ...] | None, x: torch.Tensor) -> torch.nn.Module:
    net = fold_for_inference(model, example_input=x[:1], check=False)
    if stages is None:
        se_fold.fold_se(net, x)
    else:
        for name in se_fold.se_foldable_units(net):
            if name.split(".")[0] in stages:
                parent, _, child = name.rpartition(".")
                # every unit of the chosen stages folds, whatever its map size (threshold 0)
                setattr(net.get_submodule(parent), child, se_fold.SEFoldedBottleneck(net.get_submodule(name), 0))
    return net.to(memory_format=torch.channels_last)


def measure(batch: int, rounds: int, side: int = 224) -> dict[str, list[float]]:
    x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
    se, plain = senet.create_model("se_resnet50").eval(), senet.create_model("resnet50").eval()
    with torch.no_grad():
        want = se(x)
    runners = {}
    for label, stages in POLICIES.items():
        graph = compile_frozen(_folded(se, stages, x), fullgraph=True)
        with torch.inference_mode():
            diff = (graph(x.contiguous(memory_format=torch.channels_last)) - want).abs().max().item()
        print(f"  batch {batch}, {label}: compiled, max |logit - eager| {diff:.1e}", flush=True)
        runners[label] = graph
    runners["ResNet-50"] = compile_frozen(fold_for_inference(plain, example_input=x[:1], check=False)
                                          .to(memory_format=torch.channels_last), fullgraph=True)
    xc = x.contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {label: [] for label in runners}
    with torch.inference_mode():
        for graph in runners.values():
            graph(xc)  # the plain network compiles here; one warm call for the others
        for _ in range(rounds):
            for label, graph in runners.items():
                start = time.perf_counter()
                graph(xc)
                times[label].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average before {os.getloadavg()[0]:.2f}")
    for batch in args.batches:
        times = measure(batch, args.rounds)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        low = {k: min(v) for k, v in times.items()}
        print(f"batch {batch}: {'SE-ResNet-50':<12} {'median ms':>10} {'SE/plain':>9} {'min ms':>9} {'SE/plain':>9}")
        for label in times:
            print(f"  {label:<20} {med[label]:>10.1f} {med[label] / med['ResNet-50']:>9.3f} "
                  f"{low[label]:>9.1f} {low[label] / low['ResNet-50']:>9.3f}")
    print(f"load average after {os.getloadavg()[0]:.2f} (the measurement itself adds about {args.threads})")


if __name__ == "__main__":
    main()
