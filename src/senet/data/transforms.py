"""Data augmentation and preprocessing as pure torch functions (paper §5.1).

Two kinds:

* batch transforms for small datasets held on the device (CIFAR-style random crop with zero
  padding, horizontal flip, cutout), applied to a whole ``uint8`` batch at once with
  parameters drawn beforehand, so no per-image Python runs;
* single-image transforms for image folders (ImageNet-style random-size crop + flip for
  training, resize + centre crop for evaluation, §5.1), on a ``uint8`` (C, H, W) tensor.

No function here touches a global RNG: randomness arrives as tensors or a ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch.nn import functional as F

from ..errors import UserInputError

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "sample_augment",
    "augment_batch",
    "random_crop",
    "hflip",
    "cutout",
    "normalize",
    "random_resized_crop",
    "resize_center_crop",
    "eval_view",
    "WHOLE_IMAGE_BELOW",
]


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation of small datasets: the standard CIFAR recipe plus optional cutout.

    ``crop_padding``: pad each side by this many zero pixels and crop back at a random offset
    (0 disables); ``flip``: random horizontal flip with probability 1/2; ``cutout``: side of a
    square zeroed (set to the mean, after normalisation) at a random centre (DeVries & Taylor,
    2017; 0 disables).
    """

    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0

    def __post_init__(self) -> None:
        for field in ("crop_padding", "cutout"):
            value = getattr(self, field)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise UserInputError(f"AugmentConfig.{field} must be a non-negative integer, got {value!r}")
        if not isinstance(self.flip, bool):
            raise UserInputError(f"AugmentConfig.flip must be a bool, got {self.flip!r}")


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Per-sample random choices for one batch (or one epoch): index with a slice to batch them."""

    dy: torch.Tensor  # crop offsets in [0, 2 * padding]
    dx: torch.Tensor
    flip: torch.Tensor  # bool
    cy: torch.Tensor  # cutout centres in [0, H) x [0, W)
    cx: torch.Tensor

    def __getitem__(self, index: slice | torch.Tensor) -> "AugmentParams":
        return AugmentParams(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def to(self, device: torch.device | str) -> "AugmentParams":
        return AugmentParams(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def sample_augment(n: int, height: int, width: int, config: AugmentConfig, generator: torch.Generator) -> AugmentParams:
    """Draw the random choices of ``n`` samples from ``generator`` (always the same draws, in order)."""
    span = 2 * config.crop_padding + 1
    return AugmentParams(
        dy=torch.randint(span, (n,), generator=generator),
        dx=torch.randint(span, (n,), generator=generator),
        flip=torch.rand(n, generator=generator) < 0.5,
        cy=torch.randint(height, (n,), generator=generator),
        cx=torch.randint(width, (n,), generator=generator),
    )


def random_crop(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Crop each image of ``x`` (B, C, H, W) from its zero-padded copy at offset (dy, dx).

    One pad of the batch and one ``gather`` over its flattened planes: pixel (i, j) of image b
    reads padded pixel (dy[b] + i, dx[b] + j). Offset ``padding`` is the identity.
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = dy.view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
    cols = dx.view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
    flat = (rows * (w + 2 * padding) + cols).view(b, 1, h * w).expand(b, c, h * w)
    return padded.view(b, c, -1).gather(2, flat).view(b, c, h, w)


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images of ``x`` (B, C, H, W) whose ``mask`` entry is true."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square centred at (cy, cx) in each image; it may cross the border."""
    if size == 0:
        return x
    _, _, h, w = x.shape
    top, left = (cy - size // 2).view(-1, 1, 1, 1), (cx - size // 2).view(-1, 1, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return x.masked_fill(inside, 0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``uint8`` images to float32 ``(x / 255 - mean) / std``; mean/std broadcast as (1, C, 1, 1)."""
    return (x.to(torch.float32) / 255 - mean) / std


def augment_batch(
    x: torch.Tensor, params: AugmentParams, config: AugmentConfig, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Crop and flip a ``uint8`` batch, normalise it, then cut out (so the hole is the mean colour)."""
    x = random_crop(x, config.crop_padding, params.dy, params.dx)
    if config.flip:
        x = hflip(x, params.flip)
    x = normalize(x, mean, std)
    return cutout(x, config.cutout, params.cy, params.cx)


# --- single images (image folders, §5.1) -------------------------------------------------


def _resize(img: torch.Tensor, height: int, width: int, interpolation: str = "bilinear") -> torch.Tensor:
    # Antialiased, as Pillow resizes, so downscaled training and evaluation views agree. A uint8
    # image comes back as uint8 (rounded), a float one as float in [0, 1] (bicubic overshoots).
    antialias = interpolation != "nearest"
    out = F.interpolate(img.unsqueeze(0).to(torch.float32), size=(height, width), mode=interpolation,
                        align_corners=False if antialias else None, antialias=antialias).squeeze(0)
    if img.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.clamp_(0, 1)


def random_resized_crop(
    img: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Inception-style random-size crop (paper §5.1): a crop covering ``scale`` of the area with
    aspect ratio in ``ratio`` (log-uniform), resized to ``size`` x ``size``.

    After 10 failed draws it falls back to the largest centred crop of clamped aspect ratio.
    """
    _, h, w = img.shape
    area = h * w
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(3, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(w - cw + 1, (1,), generator=generator))
            return _resize(img[:, top : top + ch, left : left + cw], size, size)
    aspect = min(max(w / h, ratio[0]), ratio[1])
    cw, ch = (w, min(h, round(w / aspect))) if w / h <= aspect else (min(w, round(h * aspect)), h)
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(img[:, top : top + ch, left : left + cw], size, size)


def resize_center_crop(img: torch.Tensor, size: int, crop_fraction: float = 0.875,
                       interpolation: str = "bilinear") -> torch.Tensor:
    """Evaluation view (paper §5.1, Table 2): resize the shorter edge to ``size / crop_fraction``
    (256 for 224) with ``interpolation`` (bilinear or bicubic, antialiased) and take the centred
    ``size`` x ``size`` crop. ``img`` is a ``uint8`` or float (C, H, W) tensor; the dtype is kept."""
    _, h, w = img.shape
    short = round(size / crop_fraction)
    nh, nw = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
    img = _resize(img, nh, nw, interpolation)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[:, top : top + size, left : left + size]


# A network whose input side is under this many pixels (CIFAR, Fashion-MNIST) was trained on
# whole images, so its evaluation view resizes the whole image instead of cropping its centre.
WHOLE_IMAGE_BELOW = 128
# ITU-R 601-2 luma weights (as Pillow's "L" conversion) for a 1-channel network given colour images.
_LUMA = (0.299, 0.587, 0.114)


def eval_view(img: torch.Tensor, *, input_size: tuple[int, int, int], crop_pct: float = 0.875,
              interpolation: str = "bilinear", mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """The evaluation view of one decoded image, normalised: the network input for it (paper §5.1).

    ``img``: a (C, H, W) float tensor in [0, 1] (a ``uint8`` one is divided by 255). Channels are
    matched to ``input_size``: colour to grey by luma, grey repeated to colour. Inputs of side
    ``>= WHOLE_IMAGE_BELOW`` (128): shorter side to ``side / crop_pct`` with ``interpolation``, centred
    crop (:func:`resize_center_crop`); smaller inputs (CIFAR-size networks, trained on whole images)
    and non-square ones: the whole image resized to (H, W). Then ``(x - mean) / std`` per channel.
    """
    c, h, w = (int(s) for s in input_size)
    x = img.to(torch.float32) / 255 if img.dtype == torch.uint8 else img.to(torch.float32)
    if x.dim() != 3:
        raise UserInputError(f"eval_view expects one (C, H, W) image, got shape {tuple(img.shape)}")
    if x.shape[0] != c:
        if c == 1 and x.shape[0] == 3:
            x = (x * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
        elif x.shape[0] == 1:
            x = x.expand(c, -1, -1)
        else:
            raise UserInputError(f"the network takes {c}-channel images; this one has {x.shape[0]} channels")
    if min(h, w) < WHOLE_IMAGE_BELOW or h != w:
        x = _resize(x, h, w, interpolation) if x.shape[1:] != (h, w) else x
    else:
        x = resize_center_crop(x, h, crop_pct, interpolation)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean_t) / std_t
