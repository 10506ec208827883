"""Which samples a rank sees in an epoch, as a pure function of (seed, epoch, rank).

Every random choice of the data pipeline draws from a ``torch.Generator`` seeded here from
its key, never from the global RNG: epoch ``e`` of a resumed run sees exactly the batches of
an uninterrupted one.
"""

from __future__ import annotations

import hashlib

import torch

from ..errors import UserInputError

__all__ = ["derive_seed", "generator_for", "shard_order", "check_shard"]


def derive_seed(*key: object) -> int:
    """A stable 63-bit seed from a key such as ``(seed, epoch, "order")``; equal keys, equal seeds."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator_for(*key: object) -> torch.Generator:
    """A fresh CPU generator seeded from ``key`` (CPU, so CPU and GPU runs draw the same numbers)."""
    return torch.Generator().manual_seed(derive_seed(*key))


def check_shard(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1):
        raise UserInputError(f"world_size must be a positive integer, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise UserInputError(f"rank must be an integer in [0, world_size={world_size}), got {rank!r}")


def padded_size(n: int, world_size: int) -> int:
    """``n`` rounded up to a multiple of ``world_size`` (every rank gets the same count)."""
    return -(-n // world_size) * world_size


def shard_order(
    n: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
) -> torch.Tensor:
    """The dataset indices rank ``rank`` visits in epoch ``epoch``, in order (int64, CPU).

    All ranks draw the same permutation of ``range(n)`` from ``(seed, epoch)``, pad it by
    repeating its head to a multiple of ``world_size`` (so every rank has the same number of
    batches, which DDP needs), and take every ``world_size``-th entry from ``rank``: the shares
    are disjoint apart from the at most ``world_size - 1`` repeated samples.
    """
    check_shard(rank, world_size)
    if n < 1:
        raise UserInputError("cannot iterate over an empty dataset")
    order = torch.randperm(n, generator=generator_for(seed, epoch, "order")) if shuffle else torch.arange(n)
    return pad_to(order, padded_size(n, world_size))[rank::world_size]


def pad_to(order: torch.Tensor, total: int) -> torch.Tensor:
    """``order`` extended to ``total`` entries by repeating it from the start."""
    if total <= len(order):
        return order
    repeats = -(-total // len(order))
    return order.repeat(repeats)[:total]
