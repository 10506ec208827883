"""Batches for training and evaluation: one loader protocol, two implementations.

* :class:`DeviceLoader` for an :class:`ArrayDataset`: the images move to the device once as
  ``uint8``; each batch is one ``index_select`` plus batched augmentation on that device
  (the airbench approach), so no per-image Python runs.
* :class:`FolderLoader` for an :class:`ImageFolderDataset`: a multi-worker ``DataLoader``
  with pinned memory (on accelerators) decoding images per item.

Both visit ``shard_order(n, seed, epoch, rank, world_size)``: which samples, in which order
and with which augmentation, is a pure function of (seed, epoch, rank).
"""

from __future__ import annotations

import warnings
from typing import Iterator, Protocol

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import UserInputError, UserTypeError
from .arrays import ArrayDataset
from .folder import CorruptImageError, ImageFolderDataset, SkippedImageError
from .repeated import repeated_order
from .seeding import check_shard, derive_seed, generator_for, pad_to, padded_size, shard_order
from .transforms import AugmentConfig, augment_batch, sample_augment

__all__ = ["Loader", "DeviceLoader", "FolderLoader", "make_loader"]


class Loader(Protocol):
    """What the training loop relies on."""

    num_samples: int

    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...
    def __len__(self) -> int: ...


# The share of a training split that dropping the last incomplete batch may leave out unannounced.
DROPPED_NOTE = 0.1


class _BaseLoader:
    def __init__(self, n: int, batch_size: int, *, train: bool, seed: int, rank: int, world_size: int,
                 drop_last: bool | None, repeats: int = 1) -> None:
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(seed, int):
            raise UserInputError(f"seed must be an integer, got {seed!r}")
        check_shard(rank, world_size)
        if n < 1:
            raise UserInputError("cannot make a loader over an empty dataset")
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = train if drop_last is None else bool(drop_last)
        self.dataset_size = n
        self.shard_size = padded_size(n, world_size) // world_size
        #: samples repeated to give every rank the same count (0 when world_size divides n).
        self.padding = padded_size(n, world_size) - n
        if self.drop_last and self.shard_size < batch_size:
            raise UserInputError(
                f"batch_size={batch_size} exceeds the {self.shard_size} samples rank {rank} sees per epoch, "
                f"so no full batch is left; use a batch_size of at most {self.shard_size} "
                f"(senet train --batch-size; in Python, make_loader(..., drop_last=False) keeps the last batch)"
            )
        left_out = self.shard_size % batch_size if self.drop_last else 0
        if left_out > DROPPED_NOTE * self.shard_size:  # a small split at a large batch: say it, once
            warnings.warn(f"batch_size={batch_size} leaves {left_out} of the {self.shard_size} samples out of each "
                          f"epoch (the last incomplete batch is dropped; each epoch drops others); a batch_size "
                          f"that divides {self.shard_size} uses them all", UserWarning, stacklevel=3)
        self.epoch = 0
        self.repeats = repeats if train else 1  # repeated augmentation (senet.data.repeated)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next ``iter()`` yields."""
        if not (isinstance(epoch, int) and epoch >= 0):
            raise UserInputError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.shard_size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields per epoch (after ``drop_last``)."""
        return len(self) * self.batch_size if self.drop_last else self.shard_size

    def _order(self) -> torch.Tensor:
        if self.repeats > 1:
            return repeated_order(self.dataset_size, seed=self.seed, epoch=self.epoch, rank=self.rank,
                                  world_size=self.world_size, repeats=self.repeats)[: self.num_samples]
        return shard_order(self.dataset_size, seed=self.seed, epoch=self.epoch, rank=self.rank,
                           world_size=self.world_size, shuffle=self.train)[: self.num_samples]


class DeviceLoader(_BaseLoader):
    """Batches of an :class:`ArrayDataset` held on ``device``, augmented there (§5.1 crop/flip)."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, train: bool, device: torch.device | str = "cpu",
                 seed: int = 0, augment: AugmentConfig | None = None, rank: int = 0, world_size: int = 1,
                 drop_last: bool | None = None, repeats: int = 1) -> None:
        super().__init__(len(dataset), batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                         drop_last=drop_last, repeats=repeats)
        self.device = torch.device(device)
        self.augment = (augment or AugmentConfig()) if train else None
        self.images = dataset.images.to(self.device)  # uint8: a quarter of the float32 footprint
        self.labels = dataset.labels.to(self.device)
        # Training batches are normalised with the dataset's statistics, evaluation batches go
        # through its evaluation view (a network's card sets it: docs/models.md).
        self.mean = torch.tensor(dataset.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(dataset.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.eval_view = dataset.eval_view

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order().to(self.device)
        params = None
        if self.augment is not None:
            # Draw one choice per position of the global order (as many as samples, whatever the
            # world size), pad and shard them exactly like the indices: the ranks together show
            # the very crops and flips of a single-process epoch.
            _, _, h, w = self.images.shape
            n, total = self.dataset_size, padded_size(self.dataset_size, self.world_size)
            drawn = sample_augment(n, h, w, self.augment, generator_for(self.seed, self.epoch, "augment"))
            positions = pad_to(torch.arange(n), total)[self.rank :: self.world_size][: self.num_samples]
            params = drawn[positions].to(self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images.index_select(0, index)
            if params is None:
                x = self.eval_view(x)
            else:
                x = augment_batch(x, params[start : start + self.batch_size], self.augment, self.mean, self.std)
            yield x, self.labels.index_select(0, index)


class _Unreadable:
    """What a worker hands back instead of a batch with an undecodable image: the message only.

    An exception raised in a DataLoader worker reaches the main process wrapped in the worker's
    whole traceback; this lets the main process raise a one-line :class:`CorruptImageError`.
    """

    def __init__(self, message: str) -> None:
        self.message = message


class _EpochView(Dataset):
    """An image folder seen through one epoch's randomness: item ``i`` draws from (seed, i)."""

    def __init__(self, dataset: ImageFolderDataset, seed: int | None, augment: AugmentConfig) -> None:
        self.dataset, self.seed, self.augment = dataset, seed, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int] | _Unreadable | _Skipped:
        # (index, copy): the copy-th showing of a sample this epoch (repeated augmentation) draws anew.
        index, copy = item if isinstance(item, tuple) else (item, 0)
        key = (self.seed, index) if copy == 0 else (self.seed, index, copy)
        generator = None if self.seed is None else generator_for(*key)
        try:
            return self.dataset.sample(index, generator, flip=self.augment.flip,
                                       cutout_size=self.augment.cutout)
        except SkippedImageError as e:
            return _Skipped(str(e))
        except CorruptImageError as e:
            return _Unreadable(str(e))


class _Skipped(_Unreadable):
    """An item left out of its batch (an undecodable image under ``on_corrupt="warn"``)."""


def _collate(items: list) -> object:
    """A batch ``(x, y, skipped messages)``: undecodable images are left out, not replaced (the
    batch is smaller, or ``x`` and ``y`` are None when nothing in it decoded)."""
    failed = next((item for item in items if type(item) is _Unreadable), None)
    if failed is not None:
        return failed
    kept = [item for item in items if not isinstance(item, _Skipped)]
    skipped = tuple(item.message for item in items if isinstance(item, _Skipped))
    x, y = default_collate(kept) if kept else (None, None)
    return x, y, skipped


class FolderLoader(_BaseLoader):
    """Batches of an :class:`ImageFolderDataset` from a multi-worker ``DataLoader``.

    Each item's random crop and flip draw from a generator seeded by (seed, epoch, index), so
    they do not depend on the worker that decodes it or on the number of workers. Memory is
    pinned when ``device`` is an accelerator.
    """

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, *, train: bool,
                 device: torch.device | str = "cpu", seed: int = 0, augment: AugmentConfig | None = None,
                 rank: int = 0, world_size: int = 1, drop_last: bool | None = None, num_workers: int = 2,
                 repeats: int = 1) -> None:
        super().__init__(len(dataset), batch_size, train=train, seed=seed, rank=rank, world_size=world_size,
                         drop_last=drop_last, repeats=repeats)
        if not (isinstance(num_workers, int) and num_workers >= 0):
            raise UserInputError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.augment = augment or AugmentConfig()
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = derive_seed(self.seed, self.epoch, "items") if self.train else None
        loader = DataLoader(
            _EpochView(self.dataset, seed, self.augment),
            batch_size=self.batch_size,
            sampler=_numbered_copies(self._order().tolist()) if self.repeats > 1 else self._order().tolist(),
            num_workers=self.num_workers,
            pin_memory=self.device.type != "cpu",
            drop_last=False,  # the order is already cut to whole batches when drop_last is set
            # An explicit generator: otherwise DataLoader draws its worker seed from the global RNG.
            generator=generator_for(self.seed, self.epoch, "workers"),
            collate_fn=_collate,
        )
        non_blocking = self.device.type != "cpu"
        for batch in loader:
            if isinstance(batch, _Unreadable):
                raise CorruptImageError(batch.message)
            x, y, skipped = batch
            for message in skipped:  # warned once per file (the warnings module's default)
                warnings.warn(f"skipping {message}; it is left out of the {self.dataset.split} split",
                              RuntimeWarning, stacklevel=2)
            if x is None:
                continue
            yield x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)


def _numbered_copies(order: list[int]) -> list[tuple[int, int]]:
    """Each index with the number of its earlier occurrences in ``order``."""
    seen: dict[int, int] = {}
    out = []
    for i in order:
        out.append((i, seen.get(i, 0)))
        seen[i] = seen.get(i, 0) + 1
    return out


def make_loader(
    dataset: ArrayDataset | ImageFolderDataset,
    batch_size: int,
    *,
    train: bool,
    device: torch.device | str = "cpu",
    seed: int = 0,
    augment: AugmentConfig | None = None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    num_workers: int = 2,
    repeats: int = 1,
) -> DeviceLoader | FolderLoader:
    """A loader yielding ``(x, y)`` on ``device``: x float32 normalised (B, C, H, W), y int64.

    Training loaders (``train=True``) shuffle and augment (``augment`` defaults to
    :class:`AugmentConfig()`: crop with 4-pixel padding + flip; image folders use the §5.1
    random-size crop instead of the padded crop) and drop the last incomplete batch unless
    ``drop_last=False``. Evaluation loaders keep the dataset order, do not augment and keep
    every sample. With ``world_size > 1`` each rank sees a disjoint share of equal size
    (padded by repeating at most ``world_size - 1`` samples; ``loader.padding`` counts them).
    ``repeats > 1`` (training only): repeated augmentation (:func:`senet.data.repeated.repeated_order`).
    Call ``set_epoch(e)`` before iterating epoch ``e``.
    """
    common = dict(train=train, device=device, seed=seed, augment=augment, rank=rank, world_size=world_size,
                  drop_last=drop_last, repeats=repeats)
    if isinstance(dataset, ArrayDataset):
        if train:
            _check_augment_fits(augment or AugmentConfig(), dataset.images.shape[-2:])
        return DeviceLoader(dataset, batch_size, **common)  # type: ignore[arg-type]
    if isinstance(dataset, ImageFolderDataset):
        return FolderLoader(dataset, batch_size, num_workers=num_workers, **common)  # type: ignore[arg-type]
    raise UserTypeError(f"make_loader needs an ArrayDataset or ImageFolderDataset, got {type(dataset).__name__}")


def _check_augment_fits(augment: AugmentConfig, size: tuple[int, int]) -> None:
    """Refuse padding or cutout larger than the images: they would mostly train on zeros (and a
    huge padding allocates a huge padded batch)."""
    h, w = size
    for key, value in (("data.crop_padding", augment.crop_padding), ("data.cutout", augment.cutout)):
        if value > max(h, w):
            raise UserInputError(f"{key}={value} is larger than the images ({h}x{w}); use at most {max(h, w)} "
                                 f"(0 turns it off)")
