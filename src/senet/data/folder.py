"""Image folders (one sub-folder per class) decoded per item with Pillow (paper §5.1 transforms)."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import Dataset

from ..errors import MissingPathError, UserInputError
from ..published import IMAGENET_MEAN, IMAGENET_STD
from ..validation import check_choice
from .images import CorruptImageError, decode_image
from .seeding import generator_for
from .transforms import EvalView, cutout, hflip, random_resized_crop

__all__ = ["ImageFolderDataset", "CorruptImageError", "SkippedImageError", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD",
           "ON_CORRUPT", "EMPTY_CLASSES"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
ON_CORRUPT = ("warn", "error")
EMPTY_CLASSES = ("warn", "error")  # a class folder of train/ without images: skipped with a warning, or refused
_SPLIT_DIRS = {"train": "train", "test": "val"}


class SkippedImageError(CorruptImageError):
    """An undecodable image under ``on_corrupt="warn"``: to be left out of its batch, with a warning."""


class ImageFolderDataset(Dataset):
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (split ``"test"`` reads ``val/``).

    Classes are the sorted sub-folders of ``train/``; ``val/`` may not introduce others. Items
    are ``(x, label)``: x a float32 (3, ``image_size``, ``image_size``) tensor normalised with
    ImageNet statistics; training items use the random-size crop and flip of §5.1, test items
    ``eval_view``: by default the view matching that crop, resize to 256 + centre 224 crop
    (:meth:`EvalView.centre_crop <senet.data.transforms.EvalView.centre_crop>`, scaled for
    other ``image_size``); a network's card replaces it (:meth:`with_view`). Grey or palette images are
    converted to RGB; 16-bit, float and CMYK images are scaled and transparent ones composited on
    white (``senet.data.images``).

    A file Pillow cannot decode raises :class:`CorruptImageError` naming it
    (``on_corrupt="error"``), or :class:`SkippedImageError` (``on_corrupt="warn"``), which the
    loaders turn into a warning naming the file and drop from its batch: the image is left out
    of the split, never replaced by another (which would count that one twice), so counts and
    metrics are over the images that exist. A split in which no image decodes fails here, before
    any training.

    A class folder of ``train/`` without images (empty, or only other files) is not a class: it
    is skipped with a warning (``empty_classes="warn"``) or refused (``"error"``); both splits
    use the same class list. Symbolic links are followed, each real directory once, so a link
    loop cannot multiply the images.
    """

    def __init__(self, root: str | Path, split: str, *, image_size: int = 224, on_corrupt: str = "warn",
                 empty_classes: str = "warn") -> None:
        check_choice("split", split, tuple(_SPLIT_DIRS))
        check_choice("on_corrupt", on_corrupt, ON_CORRUPT)
        check_choice("empty_classes", empty_classes, EMPTY_CLASSES)
        if not (isinstance(image_size, int) and not isinstance(image_size, bool) and image_size >= 1):
            raise UserInputError(f"image_size must be a positive integer, got {image_size!r}")
        self.root = Path(root)
        self.split, self.image_size, self.on_corrupt = split, image_size, on_corrupt
        self.train = split == "train"
        # Only the training split warns about skipped classes: the test split repeats the decision.
        self.classes = _class_names(self.root / "train", empty_classes, warn=self.train)
        self.samples = _list_images(self.root / _SPLIT_DIRS[split], self.classes)
        self._check_decodable()
        # Folders can hold millions of images, too many to scan for statistics: ImageNet's (the
        # paper's dataset, §5.1; the one copy, senet.published) suit natural photographs in general.
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD  # the training items' normalisation
        # Decoded image -> normalised test input: the view matching the random-size crop.
        self.eval_view = EvalView.centre_crop((3, image_size, image_size), self.mean, self.std)
        self.name = f"image folder {self.root.name} ({split}: {len(self.samples):,} images, {len(self.classes)} classes)"

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [label for _, label in self.samples]

    def with_view(self, view: EvalView) -> "ImageFolderDataset":
        """The same images, whose evaluation items go through ``view`` (a network's card:
        ``card.eval_transform()``)."""
        out = copy.copy(self)
        out.eval_view = view
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Item ``index`` with the split's transforms (training randomness seeded by the index)."""
        return self.sample(index, generator_for(0, index) if self.train else None)

    def sample(self, index: int, generator: torch.Generator | None, *, flip: bool = True,
               cutout_size: int = 0) -> tuple[torch.Tensor, int]:
        """Item ``index``: training view drawn from ``generator``, or the evaluation view if ``None``."""
        img, label = self._load(index)
        if generator is None:  # the one evaluation view (a checkpoint's card sets it, with_view)
            return self.eval_view(img), label
        img = random_resized_crop(img, self.image_size, generator)
        if flip:
            img = hflip(img.unsqueeze(0), torch.rand(1, generator=generator) < 0.5).squeeze(0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        x = (img.to(torch.float32) / 255 - mean) / std
        if generator is not None and cutout_size:
            centre = torch.randint(self.image_size, (2,), generator=generator)
            x = _cutout_one(x, cutout_size, centre)
        return x, label

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            return decode_image(path), label
        except CorruptImageError as e:
            if self.on_corrupt == "error":
                raise
            raise SkippedImageError(str(e)) from None  # the loader drops it from the batch and says so

    def _check_decodable(self) -> None:
        # Decode up to the first good image (usually the first file), so a split of nothing but
        # unreadable files fails now rather than after a training epoch. Corrupt files met on the
        # way are left to on_corrupt when they are loaded.
        first = None
        for path, _ in self.samples:
            try:
                decode_image(path)
                return
            except CorruptImageError as e:
                first = first or e
        raise CorruptImageError(f"no image of the {len(self.samples)} under {self.root / _SPLIT_DIRS[self.split]} "
                                f"can be decoded; the first: {first}")


def _cutout_one(x: torch.Tensor, size: int, centre: torch.Tensor) -> torch.Tensor:
    return cutout(x.unsqueeze(0), size, centre[:1], centre[1:]).squeeze(0)


def _class_names(train_dir: Path, empty_classes: str, warn: bool) -> list[str]:
    if not train_dir.is_dir():
        raise MissingPathError(
            f"image folder {train_dir.parent} has no train/ sub-folder; expected "
            f"<root>/train/<class>/<image> and <root>/val/<class>/<image>"
        )
    folders = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir() and not entry.name.startswith("."))
    if not folders:
        raise MissingPathError(f"{train_dir} has no class sub-folders (one folder of images per class)")
    empty = [name for name in folders if next(_walk_images(train_dir / name), None) is None]
    if empty and empty_classes == "error":
        raise UserInputError(f"class folder(s) {empty} of {train_dir} hold no images (extensions "
                             f"{', '.join(IMAGE_EXTENSIONS)}); remove them, or set empty_classes='warn' to skip them")
    if len(empty) == len(folders):
        raise MissingPathError(f"{train_dir} holds no images with extensions {', '.join(IMAGE_EXTENSIONS)} "
                               f"in its class folder(s) {folders}")
    if empty and warn:
        warnings.warn(f"skipping class folder(s) {empty} of {train_dir}: no images in them", RuntimeWarning,
                      stacklevel=4)
    return [name for name in folders if name not in empty]


def _walk_images(folder: Path) -> Iterator[Path]:
    """The image files under ``folder`` in sorted order, following symbolic links but entering
    each real directory once and never one that contains the current one: a link to an ancestor
    would otherwise repeat the images without end (or pull in the other classes)."""
    seen = {os.path.realpath(folder)}

    def fail(error: OSError) -> None:  # os.walk skips unreadable folders silently unless told
        raise error

    for dirpath, dirnames, files in os.walk(folder, followlinks=True, onerror=fail):
        here = os.path.realpath(dirpath)
        keep = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if os.path.commonpath([real, here]) == real:
                warnings.warn(f"not following {os.path.join(dirpath, name)}: it links back to {real}, "
                              f"which contains it (a loop)", RuntimeWarning, stacklevel=2)
            elif real not in seen:
                seen.add(real)
                keep.append(name)
        dirnames[:] = keep  # a top-down walk descends only into what is left here
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                yield Path(dirpath) / f


def _list_images(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    if not split_dir.is_dir():
        raise MissingPathError(f"image folder {split_dir.parent} has no {split_dir.name}/ sub-folder")
    present = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    samples: list[tuple[Path, int]] = []
    unknown = []
    for name in present:
        if name not in classes:
            # A folder train/ lacks (or holds no images in) is not a class; one with images here is an error.
            if next(_walk_images(split_dir / name), None) is not None:
                unknown.append(name)
    if unknown:
        raise UserInputError(f"{split_dir} has class folder(s) {unknown} with images that train/ does not; "
                             f"classes: {classes}")
    for label, name in enumerate(classes):
        folder = split_dir / name
        if folder.is_dir():
            samples += [(path, label) for path in _walk_images(folder)]
    if not samples:
        raise MissingPathError(f"{split_dir} holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return samples
