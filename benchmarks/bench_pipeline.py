"""Input-pipeline overhead: a real training epoch (``senet.train.fit``) against the model's own
forward+backward(+SGD step) on the very same batches, side by side in one process.

    python benchmarks/bench_pipeline.py                         # SE-ResNet-20, bundled data, CPU
    python benchmarks/bench_pipeline.py --threads 2             # as on a 2-core machine
    python benchmarks/bench_pipeline.py --gpu-throughput        # + SE-ResNet-50 images/s, batch 256,
                                                                #   AMP + channels_last (CUDA only)

The issue's target: the pipeline (loading, augmentation, metrics, logging) adds at most 5% to
an epoch on CPU for CIFAR-size data.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F


def model_only(cfg, batches, device, with_step: bool) -> float:
    """Seconds for forward + backward (+ optimiser step) over pre-made ``batches``."""
    from senet.train import build_optimizer
    from senet.train.fit import build_model, load_data

    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, load_data(cfg, 32)[0])
    model.to(device).train()
    opt = build_optimizer(model, cfg.optim)
    for x, y in batches[:2]:  # warm-up (allocator, kernels)
        F.cross_entropy(model(x), y).backward()
    opt.zero_grad(set_to_none=True)
    _sync(device)
    t0 = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if with_step:
            opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline_overhead(args: argparse.Namespace, device: torch.device) -> None:
    from senet.data import AugmentConfig, make_loader
    from senet.train import fit, load_config
    from senet.train.fit import load_data

    cfg = load_config(args.config, [f"epochs=1", f"batch_size={args.batch_size}", f"model.name={args.model}",
                                    f"data.dataset={args.data}", "precision=fp32"])
    # The batches fit sees in epoch 0 (same seed), made once and kept in memory.
    train, _ = load_data(cfg, 32)
    loader = make_loader(train, cfg.batch_size, train=True, device=device, seed=cfg.seed,
                         augment=AugmentConfig(cfg.data.crop_padding, cfg.data.flip, cfg.data.cutout))
    loader.set_epoch(0)
    batches = list(loader)
    images = sum(len(y) for _, y in batches)

    result = fit(cfg, None, device=device)  # one real epoch: loader, augmentation, metrics, lr schedule
    row = result.history[0]
    t_fit = images / row["images_per_s"]
    t_fb = model_only(cfg, batches, device, with_step=False)
    t_fbs = model_only(cfg, batches, device, with_step=True)
    print(f"{cfg.model.name} on {train.name}, {len(batches)} batches of {cfg.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"  training epoch (senet.train.fit)       {t_fit:8.2f} s  {images / t_fit:8.1f} img/s")
    print(f"  model forward+backward+SGD step alone  {t_fbs:8.2f} s  {images / t_fbs:8.1f} img/s")
    print(f"  model forward+backward alone           {t_fb:8.2f} s  {images / t_fb:8.1f} img/s")
    print(f"  pipeline overhead vs fwd+bwd+step: {100 * (t_fit / t_fbs - 1):+.1f}%   "
          f"vs fwd+bwd: {100 * (t_fit / t_fb - 1):+.1f}%  (target: at most +5%)")


def gpu_throughput(batch: int = 256, steps: int = 30) -> None:
    """SE-ResNet-50 training images/s at batch 256 with bf16/fp16 autocast and channels_last."""
    from senet import create_model

    if not torch.cuda.is_available():
        print("GPU throughput: not run (no CUDA device)")
        return
    device = torch.device("cuda")
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    for name in ("resnet50", "se_resnet50"):
        model = create_model(name).to(device, memory_format=torch.channels_last).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,), device=device)

        def step() -> None:
            with torch.autocast("cuda", dtype=dtype):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        for _ in range(5):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        print(f"{name:12s} batch {batch}, {str(dtype)[6:]} autocast, channels_last, {torch.cuda.get_device_name()}: "
              f"{batch / dt:8.0f} img/s ({1000 * dt:.0f} ms per step)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="bundled")
    p.add_argument("--model", default="se_resnet20")
    p.add_argument("--data", default="bundled")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--gpu-throughput", action="store_true", help="also time SE-ResNet-50 at batch 256 on CUDA")
    p.add_argument("--skip-pipeline", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_pipeline:
        pipeline_overhead(args, torch.device(args.device))
    if args.gpu_throughput:
        gpu_throughput()


if __name__ == "__main__":
    main()
