"""The real image subsets shipped inside the package, and a synthetic dataset for tests.

``cifar10_mini.npz`` holds the leading 5,590 training and 500 test images of the official
CIFAR-10 files, ``fashion_mnist_mini.npz`` the leading 8,517 / 3,000 of Fashion-MNIST (see
``bundled/README.md``). They are read on demand through :mod:`importlib.resources`, never at
import time. Accuracies on them must be reported under these names, never as the full dataset.
"""

from __future__ import annotations

import dataclasses
import math
from importlib import resources

import numpy as np
import torch

from ..errors import UserInputError
from .arrays import ArrayDataset, channel_stats
from .seeding import generator_for

__all__ = ["BUNDLED", "load_bundled", "load_synthetic", "parse_synthetic"]


@dataclasses.dataclass(frozen=True)
class BundledSubset:
    file: str
    title: str  # the dataset's real name, with "subset" and the counts appended when loaded


BUNDLED: dict[str, BundledSubset] = {
    "cifar10-mini": BundledSubset("cifar10_mini.npz", "CIFAR-10 subset"),
    "fashion-mnist-mini": BundledSubset("fashion_mnist_mini.npz", "Fashion-MNIST subset"),
}


def _as_nchw(x: np.ndarray) -> torch.Tensor:
    # CIFAR is stored HWC, Fashion-MNIST as (N, H, W) grey; networks want (N, C, H, W).
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.contiguous()


def load_bundled(key: str, split: str) -> ArrayDataset:
    """One split of a bundled subset; mean/std always come from its train split."""
    subset = BUNDLED[key]
    with resources.files(__package__).joinpath("bundled", subset.file).open("rb") as f:
        arrays = np.load(f)
        x_train = _as_nchw(arrays["x_train"])
        x, y = (x_train, arrays["y_train"]) if split == "train" else (_as_nchw(arrays["x_test"]), arrays["y_test"])
        n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
        classes = [str(c) for c in arrays["classes"]]
        y = torch.from_numpy(np.ascontiguousarray(y)).to(torch.int64)
    mean, std = channel_stats(x_train)
    name = f"{subset.title} ({n_train:,} train / {n_test:,} test)"
    return ArrayDataset(x, y, classes, name, mean, std)


def parse_synthetic(spec: str) -> tuple[int, tuple[int, int, int]]:
    """``"synthetic"``, ``"synthetic:N"`` or ``"synthetic:N:CxHxW"`` -> (train size, (C, H, W))."""
    parts = spec.split(":")
    size, shape = 1000, (3, 32, 32)
    try:
        if len(parts) > 3:
            raise ValueError
        if len(parts) >= 2:
            size = int(parts[1])
        if len(parts) == 3:
            dims = tuple(int(d) for d in parts[2].lower().split("x"))
            if len(dims) != 3:
                raise ValueError
            shape = dims  # type: ignore[assignment]
    except ValueError:
        raise UserInputError(
            f"dataset spec {spec!r} is malformed; use 'synthetic', 'synthetic:N' or 'synthetic:N:CxHxW' "
            f"(e.g. 'synthetic:512:1x28x28')"
        ) from None
    if size < 1 or min(shape) < 1:
        raise UserInputError(f"dataset spec {spec!r}: the size and every dimension must be positive")
    return size, shape


def load_synthetic(spec: str, split: str, num_classes: int = 10) -> ArrayDataset:
    """A deterministic, learnable dataset: each class has its own mean colour and an oriented
    stripe texture, under per-pixel noise.

    The cues survive random crops, flips and global pooling (a stripe pattern has a random phase
    per image), so a small CNN separates the classes within a few epochs. The class parameters
    are shared by both splits, the noise is drawn per split; the test split holds a fifth as many
    images as the train split (at least one per class). Same spec, same bytes, on every machine.
    """
    size, (c, h, w) = parse_synthetic(spec)
    n = size if split == "train" else max(size // 5, num_classes)
    classes = generator_for("synthetic-classes", c)
    colour = 35 * torch.randn(num_classes, c, generator=classes)
    angle = math.pi * torch.rand(num_classes, generator=classes)
    period = 3 + 6 * torch.rand(num_classes, generator=classes)  # stripe period in pixels
    g = generator_for("synthetic", split, size, c, h, w)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    ys, xs = torch.arange(h, dtype=torch.float32).view(1, h, 1), torch.arange(w, dtype=torch.float32).view(1, 1, w)
    a, p = angle[labels].view(n, 1, 1), period[labels].view(n, 1, 1)
    stripes = torch.sin(2 * math.pi * (xs * torch.cos(a) + ys * torch.sin(a)) / p + phase).unsqueeze(1)
    noise = torch.randn(n, c, h, w, generator=g)
    images = (128 + colour[labels].view(n, c, 1, 1) + 30 * stripes + 30 * noise).round().clamp(0, 255)
    images = images.to(torch.uint8)
    # Statistics of the train split, regenerated for the test split (cheap, and keeps them equal).
    train = images if split == "train" else load_synthetic(spec, "train", num_classes).images
    mean, std = channel_stats(train)
    name = f"synthetic ({size:,} train / {max(size // 5, num_classes):,} test, {c}x{h}x{w}, {num_classes} classes)"
    return ArrayDataset(images, labels.to(torch.int64), [f"class{i}" for i in range(num_classes)], name, mean, std)
