"""``load_dataset(spec, split)``: one entry point from a dataset name or path to a dataset."""

from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import MissingPathError, UserInputError, UserTypeError
from ..validation import check_choice
from .arrays import ArrayDataset
from .bundled import BUNDLED, load_bundled, load_synthetic
from .cifar import CIFAR, load_cifar
from .folder import EMPTY_CLASSES, ON_CORRUPT, ImageFolderDataset

__all__ = ["load_dataset", "DATASETS", "SPLITS", "DEFAULT_DATASET"]

SPLITS = ("train", "test")
DEFAULT_DATASET = "bundled"
# Names a spec may take (besides "synthetic:N[:CxHxW]" and an image-folder path), and what they are.
DATASETS: dict[str, str] = {
    "bundled": "the bundled CIFAR-10 subset (= cifar10-mini), no download needed",
    "cifar10-mini": "CIFAR-10 subset: 5,590 train / 500 test real images, shipped in the package",
    "fashion-mnist-mini": "Fashion-MNIST subset: 8,517 train / 3,000 test real 28x28 grey images, shipped",
    "cifar10": "CIFAR-10 from the official python archive (root= / download=True)",
    "cifar100": "CIFAR-100 (fine labels) from the official python archive (root= / download=True)",
    "synthetic": "deterministic learnable images for tests: 'synthetic', 'synthetic:N', 'synthetic:N:CxHxW'",
}


def load_dataset(
    spec: str,
    split: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    image_size: int = 224,
    on_corrupt: str = "warn",
    empty_classes: str = "warn",
) -> ArrayDataset | ImageFolderDataset:
    """The ``split`` ("train" or "test") of the dataset named by ``spec``.

    ``spec`` is a name of :data:`DATASETS` (``"bundled"`` is the default dataset), a
    ``"synthetic:N[:CxHxW]"`` spec, or the path of an image folder with ``train/`` and ``val/``
    sub-folders (``"test"`` reads ``val/``). Small datasets come back as an :class:`ArrayDataset`
    (``uint8`` tensors); folders as an :class:`ImageFolderDataset` decoded per item, at
    ``image_size`` with ``on_corrupt`` ("warn": skip a corrupt file with a warning, "error":
    fail naming it) and ``empty_classes`` ("warn": skip a class folder without images with a
    warning, "error": refuse it). ``root`` and ``download`` locate or fetch the CIFAR archives.
    """
    if not isinstance(spec, (str, Path)):
        raise UserTypeError(f"dataset spec must be a name or a path, got {type(spec).__name__}")
    check_choice("split", split, SPLITS)
    check_choice("on_corrupt", on_corrupt, ON_CORRUPT)
    check_choice("empty_classes", empty_classes, EMPTY_CLASSES)
    spec = str(spec)
    if spec == "bundled":
        spec = "cifar10-mini"
    if spec in BUNDLED:
        return load_bundled(spec, split)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return load_synthetic(spec, split)
    if spec in CIFAR:
        return load_cifar(spec, split, root=root, download=download)
    path = Path(spec).expanduser()
    if path.is_dir():
        folder = ImageFolderDataset(path, split, image_size=image_size, on_corrupt=on_corrupt,
                                    empty_classes=empty_classes)
        if len(folder.classes) < 2:  # a classifier of one class is always right: its 0% error says nothing
            raise UserInputError(f"image folder {path} has {len(folder.classes)} class "
                                 f"({', '.join(folder.classes)}); a classifier needs at least 2 class folders "
                                 f"under {path / 'train'}")
        return folder
    if path.exists():
        raise UserInputError(f"dataset path {spec!r} is a file, not a folder with train/ and val/ sub-folders "
                             f"of class folders")
    if "/" in spec or "\\" in spec or not difflib.get_close_matches(spec, DATASETS, n=1):
        # Not a dataset's name, nor close to one: a folder that is not there (a typo, or a run's
        # relative data path used from another directory).
        raise MissingPathError(f"no such folder: {spec!r} (looked for {path.absolute()}); datasets by name: "
                               f"{', '.join(DATASETS)}, synthetic:N[:CxHxW]")
    check_choice("dataset", spec, [*DATASETS, "synthetic:N[:CxHxW]", "<path to an image folder>"])
    raise AssertionError("unreachable")  # check_choice raised
