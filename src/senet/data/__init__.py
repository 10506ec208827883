"""Datasets and loaders: small real datasets on the device, image folders through workers.

Public API::

    load_dataset(spec, split, root=None, download=False, image_size=224, on_corrupt="warn")
        # "bundled" (= "cifar10-mini"), "fashion-mnist-mini", "cifar10", "cifar100",
        # "synthetic[:N[:CxHxW]]", or the path of an image folder with train/ and val/
    make_loader(dataset, batch_size, train=..., device=..., seed=..., augment=AugmentConfig(...),
                rank=0, world_size=1)   # batches as a pure function of (seed, epoch, rank)
    ArrayDataset, ImageFolderDataset, AugmentConfig

Nothing is read at import time; the bundled subsets load on first use.
"""

from .arrays import ArrayDataset, channel_stats
from .cifar import ChecksumError, DatasetNotFoundError, download_archive
from .folder import CorruptImageError, ImageFolderDataset
from .datasets import DATASETS, DEFAULT_DATASET, SPLITS, load_dataset
from .loader import DeviceLoader, FolderLoader, Loader, make_loader
from .seeding import shard_order
from .transforms import AugmentConfig

__all__ = [
    "ArrayDataset",
    "AugmentConfig",
    "ChecksumError",
    "CorruptImageError",
    "DATASETS",
    "DEFAULT_DATASET",
    "DatasetNotFoundError",
    "DeviceLoader",
    "FolderLoader",
    "ImageFolderDataset",
    "Loader",
    "SPLITS",
    "channel_stats",
    "download_archive",
    "load_dataset",
    "make_loader",
    "shard_order",
]
