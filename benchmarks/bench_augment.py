"""Throughput of the augmentation pipeline on the bundled data: the paper's (pad-crop + flip in the
loader) against the modern recipe's (the same, then RandAugment, random erasing and Mixup/CutMix on
the batch, ``senet.train.batches``), and the share of a training step each costs.

Both pipelines run once per round, alternating, on the same thread count, so load changes on a
shared machine hit both alike; the figures are medians over rounds. A training step of the recipe's
network (forward, backward, SGD) is timed in the same rounds, so the overhead is reported as a
share of training throughput (the issue's bound: at most 15%).

A proper measurement (quiet machine, 2 threads):

    python benchmarks/bench_augment.py --recipe bundled_modern --threads 2 --rounds 10

A smoke run: ``--rounds 1 --batches 2``.

Where kornia imports (an optional comparison, never a dependency), its batch RandAugment with the
recipe's N and M is timed in the same rounds: the library evaluated for this job. It draws one
operation sequence per batch at a fixed magnitude, so it is not the recipe's augmentation, only a
speed reference for it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import importlib.util

import torch

import senet
from senet.data import AugmentConfig, load_dataset, make_loader
from senet.train import load_config
from senet.train.batches import BatchSteps


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="bundled_modern")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20, help="batches per pipeline per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.recipe)
    data = load_dataset(cfg.data.dataset, "train")
    augment = AugmentConfig(crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, cutout=cfg.data.cutout)
    loader = make_loader(data, cfg.batch_size, train=True, augment=augment, seed=cfg.seed)
    model = senet.create_model(cfg.model.name, num_classes=len(data.classes))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n = min(args.batches, len(loader))
    has_kornia = importlib.util.find_spec("kornia") is not None

    def paper() -> None:
        for _, (x, y) in zip(range(n), loader):
            pass

    def modern() -> None:
        steps = BatchSteps.for_epoch(cfg, 0, 0, data.mean, data.std, len(data.classes), torch.device("cpu"))
        for _, (x, y) in zip(range(n), loader):
            steps.apply(x, y)

    x0, y0 = next(iter(loader))
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)

    def kornia_randaugment() -> None:
        from kornia.augmentation.auto import RandAugment  # optional: only where kornia imports

        spec = BatchSteps.for_epoch(cfg, 0, 0, data.mean, data.std, len(data.classes), torch.device("cpu")).randaugment
        aug = RandAugment(n=spec.num_ops, m=round(spec.magnitude)) if spec else RandAugment(n=2, m=9)
        for _, (x, y) in zip(range(n), loader):
            aug(x * std + mean)

    def train_steps() -> None:
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(model(x0), y0)
            opt.zero_grad()
            loss.backward()
            opt.step()

    pipelines = [("paper", paper), ("modern", modern), ("train", train_steps)]
    if has_kornia:
        pipelines.append(("kornia", kornia_randaugment))
    times: dict[str, list[float]] = {name: [] for name, _ in pipelines}
    for _ in range(args.rounds):
        for name, fn in pipelines:
            times[name].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    images = n * cfg.batch_size
    print(f"recipe {args.recipe}, {args.threads} threads, {args.rounds} rounds x {n} batches of {cfg.batch_size}")
    for name in ("paper", "modern"):
        print(f"  {name:6s} pipeline: {images / med[name]:10.0f} images/s")
    print(f"  training step ({cfg.model.name}): {images / med['train']:10.0f} images/s")
    for name in ("paper", "modern"):
        share = med[name] / (med[name] + med["train"])
        print(f"  {name:6s} pipeline share of a training step: {100 * share:5.1f}%")
    extra = (med["modern"] - med["paper"]) / (med["paper"] + med["train"])
    print(f"  modern over paper: {100 * extra:+.1f}% of training throughput")
    if has_kornia:
        print(f"  kornia RandAugment (loader + one op sequence per batch): {images / med['kornia']:10.0f} images/s")
    else:
        print("  kornia: not installed (pip install kornia for its RandAugment as a speed reference)")


if __name__ == "__main__":
    main()
