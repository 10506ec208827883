"""Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019): each sample of an epoch's
permutation is shown ``repeats`` times in a row, the copies dealt to consecutive ranks, so that each
is augmented differently (on different ranks when there are several), as timm's
``RepeatAugSampler``. Each rank still visits its usual share of samples per epoch: an epoch holds
``1 / repeats`` of the distinct samples, each ``repeats`` times.

The order is a pure function of (seed, epoch, rank), like :func:`~senet.data.seeding.shard_order`,
so a resumed run needs no sampler state.
"""

from __future__ import annotations

import torch

from ..errors import UserInputError
from .seeding import check_shard, generator_for, pad_to, padded_size

__all__ = ["repeated_order"]


def repeated_order(n: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                   repeats: int = 3) -> torch.Tensor:
    """The indices rank ``rank`` visits in ``epoch``: a permutation of ``range(n)`` from ``(seed,
    epoch)``, each entry repeated ``repeats`` times, padded to a multiple of ``world_size``, dealt
    round-robin, cut to ``ceil(n / world_size)`` per rank."""
    check_shard(rank, world_size)
    if n < 1:
        raise UserInputError("cannot iterate over an empty dataset")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise UserInputError(f"repeats must be a positive integer, got {repeats!r}")
    order = torch.randperm(n, generator=generator_for(seed, epoch, "order")).repeat_interleave(repeats)
    total = padded_size(n * repeats, world_size)
    return pad_to(order, total)[rank::world_size][: padded_size(n, world_size) // world_size]
