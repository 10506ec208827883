"""The modern recipe's steps on each training batch, on the device, after the loader's augmentation:
the train resolution, RandAugment, random erasing, then Mixup/CutMix and the soft targets
("ResNet strikes back", Wightman et al. 2021, Table 1).

All randomness of an epoch comes from generators seeded by ``(seed, epoch, rank, part)``
(:func:`senet.data.seeding.derive_seed`), consumed batch by batch in order: an epoch's batches are a
pure function of its key, so a run resumed at an epoch boundary sees exactly the batches of an
uninterrupted one, with nothing to save. With every part off, :meth:`BatchSteps.apply` returns the
batch untouched and no target vectors (the paper's recipe, bit for bit).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..data.augment import RandAugmentSpec, parse_randaugment, rand_augment, sample_randaugment
from ..data.erasing import random_erase, sample_erasing
from ..data.mix import MixSettings, mix_images, mix_targets, sample_mix
from ..data.seeding import derive_seed, generator_for
from .config import TrainConfig

__all__ = ["BatchSteps"]


@dataclasses.dataclass
class BatchSteps:
    """One epoch's batch steps (:meth:`for_epoch`); :meth:`apply` to each ``(x, y)`` in order."""

    mean: torch.Tensor                      # (1, C, 1, 1), on the device
    std: torch.Tensor
    num_classes: int
    label_smoothing: float
    train_size: int | None = None
    randaugment: RandAugmentSpec | None = None
    reprob: float = 0.0
    mix: MixSettings | None = None
    aug_gen: torch.Generator | None = None  # CPU: RandAugment and erasing draws
    noise_gen: torch.Generator | None = None  # on the device: the erasing noise
    mix_rng: np.random.Generator | None = None
    fill: tuple[float, ...] = ()            # the mean colour, for RandAugment's uncovered pixels

    @classmethod
    def for_epoch(cls, cfg: TrainConfig, epoch: int, rank: int, mean: Sequence[float], std: Sequence[float],
                  num_classes: int, device: torch.device) -> "BatchSteps":
        d, m = cfg.data, cfg.mix
        key = (cfg.seed, epoch, rank)
        mix = m if m.active else None
        noise = torch.Generator(device=device).manual_seed(derive_seed(*key, "erase-noise")) if d.reprob > 0 else None
        return cls(_per_channel(mean, device), _per_channel(std, device), num_classes, cfg.label_smoothing, d.train_image_size,
                   parse_randaugment(d.randaugment) if d.randaugment else None, d.reprob, mix,
                   generator_for(*key, "augment-batch"), noise,
                   np.random.default_rng(derive_seed(*key, "mix")) if mix is not None else None, tuple(mean))

    @property
    def active(self) -> bool:
        return bool(self.train_size or self.randaugment or self.reprob > 0 or self.mix)

    def apply(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch to train on, and its soft targets (None: train on the labels ``y``)."""
        if self.train_size and x.shape[-1] != self.train_size:
            # Arrays come at the stored side; image folders are already decoded at the train side.
            x = F.interpolate(x, size=(self.train_size, self.train_size), mode="bilinear", align_corners=False,
                              antialias=True)
        if self.randaugment is not None:
            # The operations are defined on [0, 1] images (timm applies them before normalising).
            params = sample_randaugment(self.randaugment, x.shape[0], self.aug_gen)
            x01 = rand_augment(x * self.std + self.mean, params, self.randaugment, self.fill)
            x = (x01 - self.mean) / self.std
        if self.reprob > 0:
            x = random_erase(x, sample_erasing(x.shape[0], x.shape[2], x.shape[3], self.reprob, self.aug_gen),
                             self.noise_gen)
        if self.mix is None:
            return x, None
        params = sample_mix(self.mix, x.shape[0], x.shape[2], x.shape[3], self.mix_rng)
        return mix_images(x, params), mix_targets(y, self.num_classes, params.lam, self.label_smoothing)


def _per_channel(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)
