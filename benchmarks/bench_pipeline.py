"""The training loop's overhead: the product's training epoch (``senet.train.fit``: loader,
augmentation, device-side metrics and NaN guard, LR schedule, progress, background writes)
against a bare loop (forward, backward, optimiser step and nothing else) on the very same
batches, with the same model, optimiser, precision and memory format. Rounds alternate between
the two in one process; the ratio is product / bare throughput (1.0 = no overhead).

    python benchmarks/bench_pipeline.py                   # CPU: SE-ResNet-20, bundled data, at 2 and all threads
    python benchmarks/bench_pipeline.py --threads 2       # as on a 2-core machine
    python benchmarks/bench_pipeline.py --device cuda     # GPU, every target below, one command:
        # SE-ResNet-20 on the bundled data (recipe bundled_gpu), SE-ResNet-50 at 224x224 (synthetic), batch 128,
        # bf16, channels_last, both as product/bare ratios; then `senet train` with no arguments, timed
        # wall-clock in a fresh process (model build, data load and CUDA start-up included), with its top-1 error.

Targets: ratio >= 0.97 on GPU, >= 0.95 on CPU at 2 and 16 threads; `senet train` on a
GPU <= 10 s with top-1 error within 2 points of the CPU default's 27.4%.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.nn import functional as F

CASES = {
    # name: (recipe, overrides, description)
    "bundled": (None, [], "SE-ResNet-20, bundled CIFAR-10 subset"),
    "r50": ("bundled", ["model.name=se_resnet50", "data.dataset=synthetic:2560:3x224x224", "batch_size=128",
                        "eval_batch_size=256", "precision=bf16", "channels_last=true", "schedule.warmup_epochs=0"],
            "SE-ResNet-50, synthetic 224x224, batch 128, bf16, channels_last"),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def product_epoch(cfg, device: torch.device, epochs: int) -> float:
    """Images/s of ``fit``'s training epochs after the first (the first one warms up kernels)."""
    from senet.train import fit

    result = fit(cfg.replace(epochs=epochs), None, device=device)
    return statistics.mean(row["images_per_s"] for row in result.history[1:])


def bare_setup(cfg, device: torch.device):
    """The model, optimiser and batches of ``fit``'s second epoch, made the same way fit makes them."""
    from senet.data import AugmentConfig, make_loader
    from senet.train import build_optimizer
    from senet.train.fit import build_model, load_data

    torch.manual_seed(cfg.seed)
    train, _ = load_data(cfg, cfg.data.image_size or 32)
    model, _ = build_model(cfg, train)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = make_loader(train, cfg.batch_size, train=True, device=device, seed=cfg.seed,
                         augment=AugmentConfig(cfg.data.crop_padding, cfg.data.flip, cfg.data.cutout))
    loader.set_epoch(1)
    batches = [(x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x, y) for x, y in loader]
    return model.train(), build_optimizer(model, cfg.optim), batches


def bare_epoch(cfg, device, model, opt, batches, amp_dtype) -> float:
    """Images/s of forward + backward + optimiser step over ``batches`` (after one warm-up pass)."""
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def one_pass() -> None:
        for x, y in batches:
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    one_pass()
    _sync(device)
    t0 = time.perf_counter()
    one_pass()
    _sync(device)
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t0)


def loop_ratio(case: str, device: torch.device, rounds: int, epochs: int, extra: list[str] = ()) -> float:
    from senet.train import load_config
    from senet.train.fit import resolve_precision

    recipe, overrides, what = CASES[case]
    if recipe is None:
        recipe = "bundled_gpu" if device.type == "cuda" else "bundled"
    cfg = load_config(recipe, [*overrides, *extra])
    amp_dtype = resolve_precision(cfg.precision, device)
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{what} (recipe {recipe}), batch {cfg.batch_size}, {str(amp_dtype or torch.float32)[6:]}, "
          f"{name}{threads}", flush=True)
    model, opt, batches = bare_setup(cfg, device)
    ratios = []
    for r in range(rounds):  # interleaved: product, bare, product, bare, ...
        product = product_epoch(cfg, device, epochs)
        bare = bare_epoch(cfg, device, model, opt, batches, amp_dtype)
        ratios.append(product / bare)
        print(f"  round {r + 1}: product loop {product:9.1f} img/s   bare loop {bare:9.1f} img/s   "
              f"ratio {product / bare:.3f}", flush=True)
    ratio = statistics.median(ratios)
    print(f"  median product/bare throughput ratio: {ratio:.3f}", flush=True)
    return ratio


def time_to_accuracy() -> None:
    """``senet train`` with no arguments, in a fresh process: wall-clock and final top-1 error."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "senet.cli", "train", "--out", f"{tmp}/run"],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:])
        raise SystemExit(f"senet train failed with exit code {proc.returncode}")
    picked = [line for line in proc.stdout.splitlines() if line.startswith("no recipe named")]
    final = re.search(r"final: top-1 error ([\d.]+)%", proc.stdout)
    print(f"`senet train` (no arguments): {wall:.1f} s wall-clock, final top-1 error "
          f"{final.group(1) if final else '?'}% {picked[0] if picked else ''}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--cases", default=None, help="comma-separated: bundled, r50 (default: bundled on CPU, both on CUDA)")
    p.add_argument("--threads", type=int, nargs="*", default=None,
                   help="CPU thread counts to measure (default: 2 and all cores)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=2, help="fit epochs per round; the first is warm-up")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every case (e.g. a small dataset for a smoke test)")
    p.add_argument("--skip-train", action="store_true", help="on CUDA, skip timing `senet train`")
    args = p.parse_args()
    device = torch.device(args.device)
    cases = (args.cases or ("bundled,r50" if device.type == "cuda" else "bundled")).split(",")
    if device.type == "cpu":
        for threads in args.threads or sorted({2, os.cpu_count() or 2}):
            torch.set_num_threads(threads)
            for case in cases:
                loop_ratio(case, device, args.rounds, args.epochs, args.overrides)
    else:
        for case in cases:
            loop_ratio(case, device, args.rounds, max(args.epochs, 3), args.overrides)
        if not args.skip_train:
            time_to_accuracy()


if __name__ == "__main__":
    main()
