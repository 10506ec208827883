"""Small datasets held whole as ``uint8`` tensors, and their per-channel statistics."""

from __future__ import annotations

import dataclasses

import torch

from ..errors import UserInputError

__all__ = ["ArrayDataset", "channel_stats"]


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
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

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

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one image, for building a network that fits it."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]
