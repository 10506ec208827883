"""Data augmentation and preprocessing as pure torch functions (paper §5.1).

Two kinds:

* batch transforms for small datasets held on the device (CIFAR-style random crop with zero
  padding, horizontal flip, cutout), applied to a whole ``uint8`` batch at once with
  parameters drawn beforehand, so no per-image Python runs;
* single-image transforms for image folders (ImageNet-style random-size crop + flip for
  training, §5.1), on a ``uint8`` (C, H, W) tensor;
* the evaluation view, :class:`EvalView`: timm's data-config fields (input size, crop
  fraction and mode, interpolation, mean/std) and what they do to an image or a batch. A
  network's card records the view it was trained for (docs/models.md, "The evaluation view").

No function here touches a global RNG: randomness arrives as tensors or a ``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import torch
from torch.nn import functional as F

from ..errors import UserInputError
from ..validation import check_choice

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
    "EvalView",
    "ViewGeometry",
    "eval_view",
    "CROP_MODES",
    "INTERPOLATIONS",
    "DEFAULT_CROP_PCT",
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
    # ``img`` is one (C, H, W) image or a (B, C, H, W) batch of images of one size.
    if tuple(img.shape[-2:]) == (height, width):
        return img  # torchvision's resize returns an image already at the size unchanged
    antialias = interpolation != "nearest"
    batch = img if img.dim() == 4 else img.unsqueeze(0)
    out = F.interpolate(batch.to(torch.float32), size=(height, width), mode=interpolation,
                        align_corners=False if antialias else None, antialias=antialias)
    out = out if img.dim() == 4 else out.squeeze(0)
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


# --- the evaluation view (timm's data config semantics) ---------------------------------

CROP_MODES = ("center", "squash", "border")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
DEFAULT_CROP_PCT = 0.875  # paper §5.1: a 224 crop of a 256 side (timm's DEFAULT_CROP_PCT)
# ITU-R 601-2 luma weights (as Pillow's "L" conversion) for a 1-channel network given colour images.
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class ViewGeometry:
    """Where one image of a given size goes under an :class:`EvalView`: resized to ``resize``
    (H, W), padded by ``pad`` (top, bottom, left, right) pixels of the fill colour, then the
    window of the network's (H, W) at ``crop`` (top, left) is taken."""

    resize: tuple[int, int]
    pad: tuple[int, int, int, int]
    crop: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class EvalView:
    """The evaluation view of a network: a decoded image to its normalised input (paper §5.1).

    The fields are timm's data-config keys and mean what timm's ``resolve_data_config`` +
    ``create_transform(is_training=False)`` make of them, whatever the image or input size:

    * ``crop_mode="center"``: resize keeping the aspect ratio so the image covers
      ``floor(side / crop_pct)`` on each side of ``input_size`` (for a square input: shorter
      edge to ``floor(side / crop_pct)``, 256 for 224 at 0.875), then the centred crop;
    * ``"squash"``: resize each edge to ``floor(side / crop_pct)`` (aspect ratio not kept),
      then the centred crop; with ``crop_pct=1.0`` the whole image resized (:meth:`whole_image`);
    * ``"border"``: resize keeping the aspect ratio so the longer edge fits, pad with the mean
      colour, centred crop (nothing is lost at ``crop_pct=1.0``);

    then ``(x - mean) / std`` per channel. Colour images are given to a one-channel network as
    their luma, grey ones repeated to the network's channels. Calling the view applies it to one
    (C, H, W) image or a (B, C, H, W) batch of same-size images, ``uint8`` or float in [0, 1].
    """

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = DEFAULT_CROP_PCT
    crop_mode: str = "center"
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("input_size", tuple(int(s) for s in self.input_size))
        set_("mean", tuple(float(m) for m in self.mean))
        set_("std", tuple(float(s) for s in self.std))
        set_("crop_pct", float(self.crop_pct))
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise UserInputError(f"EvalView.input_size must be (C, H, W) with positive entries, got {self.input_size}")
        if len(self.mean) != self.input_size[0] or len(self.std) != self.input_size[0]:
            raise UserInputError(f"EvalView.mean/std need {self.input_size[0]} values (one per input channel), got "
                             f"{len(self.mean)}/{len(self.std)}")
        if not 0 < self.crop_pct <= 1:
            raise UserInputError(f"crop_pct must lie in (0, 1], got {self.crop_pct}")
        check_choice("crop_mode", self.crop_mode, CROP_MODES)
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "EvalView":
        """The view a timm-style data config describes (a :class:`~senet.models.card.ModelCard`,
        timm's ``pretrained_cfg`` or a plain dict), with timm's defaults for what it leaves out:
        ``crop_pct`` 0.875, ``crop_mode`` "center", bilinear interpolation."""
        return cls(input_size=tuple(cfg["input_size"]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                   crop_pct=cfg.get("crop_pct") or DEFAULT_CROP_PCT, crop_mode=cfg.get("crop_mode") or "center",
                   interpolation=cfg.get("interpolation") or "bilinear")

    @classmethod
    def whole_image(cls, input_size: tuple[int, int, int], mean: tuple[float, ...],
                    std: tuple[float, ...]) -> "EvalView":
        """The view of a network trained on whole images (the CIFAR array pipeline pads and crops
        whole images, paper §6.1): the whole image resized to the input size, which is timm's
        ``crop_mode="squash"`` at ``crop_pct=1.0``."""
        return cls(input_size, mean, std, crop_pct=1.0, crop_mode="squash", interpolation="bilinear")

    @classmethod
    def centre_crop(cls, input_size: tuple[int, int, int], mean: tuple[float, ...],
                    std: tuple[float, ...]) -> "EvalView":
        """The view matching the Inception random-size crop that image folders train with
        (paper §5.1): shorter edge to ``side / 0.875``, centred crop, bilinear."""
        return cls(input_size, mean, std, crop_pct=DEFAULT_CROP_PCT, crop_mode="center", interpolation="bilinear")

    def replace(self, **changes: Any) -> "EvalView":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def geometry(self, height: int, width: int) -> ViewGeometry:
        """Where a ``height`` x ``width`` image goes (timm's eval transform, step by step)."""
        th, tw = self.input_size[1:]
        # timm: scale_size = floor(img_size / crop_pct), per side.
        sh, sw = math.floor(th / self.crop_pct), math.floor(tw / self.crop_pct)
        if self.crop_mode == "squash":
            size = (sh, sw)
        elif self.crop_mode == "center" and sh == sw:
            # torchvision's Resize(int): the shorter edge to sh, the longer one truncated.
            size = (sh, int(sh * width / height)) if height <= width else (int(sh * height / width), sh)
        else:
            # timm's ResizeKeepRatio: cover the (sh, sw) box ("center") or fit inside it ("border").
            rh, rw = height / sh, width / sw
            ratio = max(rh, rw) if self.crop_mode == "border" else min(rh, rw)
            size = (round(height / ratio), round(width / ratio))
        # torchvision's CenterCrop / timm's CenterCropOrPad: pad what is short of the crop, centre the rest.
        ph, pw = max(th - size[0], 0), max(tw - size[1], 0)
        pad = (ph // 2, (ph + 1) // 2, pw // 2, (pw + 1) // 2)
        crop = (int(round((size[0] + ph - th) / 2.0)), int(round((size[1] + pw - tw) / 2.0)))
        return ViewGeometry(size, pad, crop)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """The network input for ``img``: one (C, H, W) image or a (B, C, H, W) batch."""
        if img.dim() not in (3, 4):
            raise UserInputError(f"an evaluation view takes a (C, H, W) image or a (B, C, H, W) batch, "
                             f"got shape {tuple(img.shape)}")
        x = img.to(torch.float32) / 255 if img.dtype == torch.uint8 else img.to(torch.float32)
        x = _match_channels(x, self.input_size[0])
        x = _apply_geometry(x, self.geometry(*x.shape[-2:]), self.input_size[1:], self.interpolation,
                            fill=tuple(round(255 * m) / 255 for m in self.mean))
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return (x - mean) / std


def _match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    have = x.shape[-3]
    if have == channels:
        return x
    if channels == 1 and have == 3:
        return (x * torch.tensor(_LUMA, device=x.device).view(3, 1, 1)).sum(-3, keepdim=True)
    if have == 1:
        return x.expand(*x.shape[:-3], channels, *x.shape[-2:])
    raise UserInputError(f"the network takes {channels}-channel images; this one has {have} channels")


def _apply_geometry(x: torch.Tensor, g: ViewGeometry, out: tuple[int, int], interpolation: str,
                    fill: tuple[float, ...] | None = None) -> torch.Tensor:
    x = _resize(x, *g.resize, interpolation)
    top, bottom, left, right = g.pad
    if top or bottom or left or right:
        h, w = g.resize[0] + top + bottom, g.resize[1] + left + right
        value = torch.tensor(fill or (0.0,) * x.shape[-3], dtype=x.dtype, device=x.device).view(-1, 1, 1)
        canvas = value.expand(*x.shape[:-2], h, w).clone()
        canvas[..., top:top + g.resize[0], left:left + g.resize[1]] = x
        x = canvas
    (th, tw), (ct, cl) = out, g.crop
    return x[..., ct:ct + th, cl:cl + tw]


def resize_center_crop(img: torch.Tensor, size: int, crop_fraction: float = DEFAULT_CROP_PCT,
                       interpolation: str = "bilinear") -> torch.Tensor:
    """The geometry of the centre-crop evaluation view (paper §5.1, Table 2) without
    normalisation: shorter edge to ``floor(size / crop_fraction)`` (256 for 224) with
    ``interpolation`` (antialiased), then the centred ``size`` x ``size`` crop. ``img`` is a
    ``uint8`` or float (C, H, W) tensor; the dtype is kept."""
    view = EvalView((img.shape[0], size, size), (0.0,) * img.shape[0], (1.0,) * img.shape[0],
                    crop_pct=crop_fraction, crop_mode="center", interpolation=interpolation)
    return _apply_geometry(img, view.geometry(*img.shape[-2:]), (size, size), interpolation)


def eval_view(img: torch.Tensor, *, input_size: tuple[int, int, int], crop_pct: float = DEFAULT_CROP_PCT,
              crop_mode: str = "center", interpolation: str = "bilinear", mean: tuple[float, ...],
              std: tuple[float, ...]) -> torch.Tensor:
    """``EvalView(...)(img)``: the evaluation view of one decoded image, normalised (:class:`EvalView`)."""
    return EvalView(input_size, mean, std, crop_pct, crop_mode, interpolation)(img)
