"""Small datasets held whole as ``uint8`` tensors, and their per-channel statistics."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes
from ..errors import UserInputError
from .transforms import EvalView

__all__ = ["ArrayDataset", "channel_stats", "write_image_folder"]


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``uint8`` images (N, C, H, W), in [0, 1] units.

    Accumulated in float64 over chunks so that 50,000 CIFAR images neither lose precision nor
    need a float copy of the whole array.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise UserInputError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise UserInputError("cannot compute channel statistics of an empty image set")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for part in images.split(chunk):
        x = part.to(dtype=torch.float64).transpose(0, 1).reshape(channels, -1)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
    count = images.numel() / channels
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    # A constant channel (std 0) would divide by zero when normalising; 1/255 keeps it finite.
    std = std.clamp_min(1.0)
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


@dataclasses.dataclass
class ArrayDataset:
    """A dataset small enough to hold whole: images (N, C, H, W) ``uint8``, labels (N,) ``int64``.

    ``name`` is what reports print ("CIFAR-10 subset (5,590 train / 500 test)"); ``mean`` and
    ``std`` are per-channel in [0, 1] units, computed from the *train* split and shared by its
    test split, so both are normalised alike.

    ``eval_view`` is how evaluation batches are prepared (:class:`~senet.data.transforms.EvalView`).
    By default it is the view matching this pipeline's training augmentation, which pads and
    crops whole images: the whole image (``crop_mode="squash"``, ``crop_pct=1.0``) normalised
    with ``mean``/``std``; a network's card replaces it (:meth:`with_view`).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_view: EvalView | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise UserInputError(
                f"ArrayDataset.images must be a uint8 (N, C, H, W) tensor, got "
                f"{getattr(self.images, 'dtype', type(self.images).__name__)} {tuple(getattr(self.images, 'shape', ()))}"
            )
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise UserInputError("ArrayDataset.labels must be an int64 (N,) tensor")
        if len(self.labels) != len(self.images):
            raise UserInputError(f"ArrayDataset has {len(self.images)} images but {len(self.labels)} labels")
        channels = self.images.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise UserInputError(f"ArrayDataset.mean/std need {channels} values (one per channel)")
        if any(s <= 0 for s in self.std):
            raise UserInputError(f"ArrayDataset.std must be positive, got {self.std}")
        if len(self.labels) and not (0 <= int(self.labels.min()) and int(self.labels.max()) < len(self.classes)):
            raise UserInputError(f"ArrayDataset labels must lie in [0, {len(self.classes)}) (one per class)")
        if self.eval_view is None:
            self.eval_view = EvalView.whole_image(self.input_size, self.mean, self.std)

    def with_view(self, view: EvalView) -> "ArrayDataset":
        """The same images evaluated through ``view`` (a network's card: ``card.eval_transform()``)."""
        return dataclasses.replace(self, eval_view=view)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, for building a network that fits it."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def write_image_folder(dataset: ArrayDataset, root: str | os.PathLike[str], split: str,
                       limit: int | None = None, start: int = 0) -> Path:
    """Write ``limit`` images of ``dataset`` from index ``start`` on as lossless PNGs in the
    image-folder layout :class:`~senet.data.ImageFolderDataset` reads: ``root/train/<class>/<i>.png``
    for ``split="train"``, ``root/val/<class>/<i>.png`` for ``"test"``, ``i`` the image's index in
    ``dataset``; returns ``root``. (The folder dataset orders its classes by folder name, so
    labels follow the sorted class names.)"""
    from PIL import Image  # here: Pillow is needed only to write image files (import senet.data stays light)

    if split not in ("train", "test"):
        raise UserInputError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    base = root / ("train" if split == "train" else "val")
    stop = len(dataset) if limit is None else min(start + int(limit), len(dataset))
    pixels = dataset.images[start:stop].permute(0, 2, 3, 1).numpy()  # (N, H, W, C) for Pillow
    for i, img, label in zip(range(start, stop), pixels, dataset.labels[start:stop].tolist()):
        (base / dataset.classes[label]).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()  # written by senet.atomic: an interrupted run leaves no half-written image
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
        atomic_write_bytes(base / dataset.classes[label] / f"{i:05d}.png", buf.getvalue())
    return root
