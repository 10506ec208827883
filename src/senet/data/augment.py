"""RandAugment (Cubuk et al. 2020) on batches on the device, with timm's operations and magnitudes
and per-sample randomness from a seeded generator (random erasing: :mod:`senet.data.erasing`).

The images are float ``(B, C, H, W)`` batches in [0, 1]. Every random choice (which operations,
whether each applies, its magnitude and sign) is drawn beforehand, per sample, from a
``torch.Generator`` the caller seeds (:func:`sample_randaugment`), so an epoch's augmentation is a
pure function of its seed. Each operation then runs on the samples that drew it, vectorised over
them.

Written here rather than taken from kornia: kornia 0.9's ``RandAugment`` draws one operation
sequence per batch from the global RNG, at one fixed magnitude (no per-sample magnitude noise); the
RSB recipes need timm's per-sample draws with ``mstd`` (docs/training.md, "Modern recipes").
"""

from __future__ import annotations

import dataclasses
import math
import re

import torch
from torch.nn import functional as F

from ..errors import UserInputError

__all__ = ["RandAugmentSpec", "parse_randaugment", "RandAugmentParams", "sample_randaugment", "rand_augment", "OPS"]

# timm's _RAND_INCREASING_TRANSFORMS (``inc1``): magnitude 0 is always the identity.
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
       "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
       "TranslateXRel", "TranslateYRel")
# timm's _RAND_TRANSFORMS (``inc0``): the enhancement ops' factor is 1 + 0.9 level * sign in both, but
# posterize and solarize run their magnitude the other way.
OPS_INC0 = tuple(name.replace("Increasing", "") for name in OPS)
LEVEL_DENOM = 10.0  # timm's _LEVEL_DENOM: magnitudes are out of 10
_LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class RandAugmentSpec:
    """timm's ``rand-m{M}-n{N}-mstd{S}-mmax{X}-inc{0|1}-p{P}``: ``num_ops`` operations each applied
    with probability ``prob`` at magnitude ``magnitude`` (of 10) plus Gaussian noise of std ``mstd``
    (``mstd`` above 100: uniform in [0, M], as timm), clipped to [0, ``magnitude_max``]."""

    magnitude: float = 9.0
    num_ops: int = 2
    mstd: float = 0.0
    increasing: bool = False
    prob: float = 0.5
    magnitude_max: float = LEVEL_DENOM

    @property
    def ops(self) -> tuple[str, ...]:
        return OPS if self.increasing else OPS_INC0


def parse_randaugment(text: str) -> RandAugmentSpec:
    """Parse timm's RandAugment string, e.g. ``rand-m7-mstd0.5-inc1`` (RSB A2/A3) or ``rand-m9-n3``."""
    parts = text.split("-")
    if parts[0] != "rand":
        raise UserInputError(f"expected a string starting with 'rand', got {text!r}")
    values: dict[str, float] = {}
    for part in parts[1:]:
        m = re.fullmatch(r"(mstd|mmax|inc|m|n|p)([0-9.]+)", part)
        if m is None:
            raise UserInputError(f"unknown part {part!r} in {text!r}")
        values[m.group(1)] = float(m.group(2))
    mstd = values.get("mstd", 0.0)
    spec = RandAugmentSpec(magnitude=values.get("m", 9.0), num_ops=int(values.get("n", 2)),
                           mstd=math.inf if mstd > 100 else mstd, increasing=bool(values.get("inc", 0)),
                           prob=values.get("p", 0.5), magnitude_max=values.get("mmax", LEVEL_DENOM))
    if not (0 <= spec.magnitude <= LEVEL_DENOM and spec.num_ops >= 1 and spec.mstd >= 0 and 0 <= spec.prob <= 1
            and 0 < spec.magnitude_max <= LEVEL_DENOM):
        raise UserInputError(f"out of range in {text!r}: m in [0, 10], n >= 1, mstd >= 0, p in [0, 1], mmax in (0, 10]")
    return spec


@dataclasses.dataclass(frozen=True)
class RandAugmentParams:
    """Per-sample draws for ``L`` layers: ``op`` (B, L) operation index, ``apply`` (B, L) bool,
    ``level`` (B, L) magnitude / 10 in [0, 1], ``sign`` (B, L) +-1."""

    op: torch.Tensor
    apply: torch.Tensor
    level: torch.Tensor
    sign: torch.Tensor


def sample_randaugment(spec: RandAugmentSpec, batch: int, generator: torch.Generator) -> RandAugmentParams:
    """Draw each sample's operations (uniformly, with replacement, as timm), whether each applies
    (``prob``), its magnitude (``N(m, mstd)``, or uniform in [0, m] for an infinite ``mstd``,
    clipped to [0, ``magnitude_max``]) and its sign."""
    shape = (batch, spec.num_ops)
    op = torch.randint(len(spec.ops), shape, generator=generator)
    apply = torch.rand(shape, generator=generator) < spec.prob
    if math.isinf(spec.mstd):
        magnitude = spec.magnitude * torch.rand(shape, generator=generator)
    else:
        magnitude = spec.magnitude + spec.mstd * torch.randn(shape, generator=generator)
    level = magnitude.clamp(0.0, spec.magnitude_max) / LEVEL_DENOM
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
    return RandAugmentParams(op, apply, level, sign)


def rand_augment(x: torch.Tensor, params: RandAugmentParams, spec: RandAugmentSpec,
                 fill: tuple[float, ...]) -> torch.Tensor:
    """Apply the drawn operations to ``x`` (B, C, H, W) in [0, 1], layer by layer; geometric
    operations fill uncovered pixels with ``fill`` (the dataset mean, as timm's ``img_mean``)."""
    fill_t = torch.tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    ops = spec.ops
    for layer in range(params.op.shape[1]):
        # Which samples take which operation is decided on the host (the draws are CPU tensors), so
        # selecting them never waits for the device.
        op, apply = params.op[:, layer].cpu(), params.apply[:, layer].cpu()
        level = params.level[:, layer].to(x.device, x.dtype)
        sign = params.sign[:, layer].to(x.device, x.dtype)
        out = x.clone()
        for k, name in enumerate(ops):
            rows = torch.nonzero((op == k) & apply).flatten()
            if rows.numel():
                rows = rows.to(x.device)
                out[rows] = _OP_FNS[name](x[rows], level[rows], sign[rows], fill_t)
        x = out
    return x


# --- the operations: (x, level, sign, fill) -> x, vectorised over the samples -------------------

def _u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round_().clamp_(0, 255)


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # PIL.ImageEnhance: degenerate + factor * (image - degenerate), clipped.
    return (degenerate + _per_sample(factor) * (x - degenerate)).clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] != 3:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def _enhance_factor(level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    return 1.0 + 0.9 * level * sign  # timm's _enhance_increasing_level_to_arg


def _auto_contrast(x, level, sign, fill):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    scaled = (x - lo) / (hi - lo).clamp_min(1e-12)
    return torch.where(hi > lo, scaled, x)


def _equalize(x, level, sign, fill):
    # PIL.ImageOps.equalize per channel: lut[i] = (cumulative count before i + step // 2) // step,
    # step = (pixels - count of the last used level) // 255; identity where step is 0.
    b, c, h, w = x.shape
    q = _u8(x).long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, q, torch.ones_like(q))
    last = torch.arange(256, device=x.device).expand_as(hist).masked_fill(hist == 0, -1).amax(1, keepdim=True)
    step = (h * w - hist.gather(1, last.clamp_min(0))) // 255
    before = torch.cumsum(hist, 1) - hist
    lut = ((before + step // 2) // step.clamp_min(1)).clamp_(0, 255)
    out = torch.where(step > 0, lut.gather(1, q), q)
    return (out.to(x.dtype) / 255).view(b, c, h, w)


def _invert(x, level, sign, fill):
    return 1.0 - x


def _posterize(bits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    keep = (2.0 ** (8 - bits.clamp(0, 8))).view(-1, 1, 1, 1)
    return torch.floor(_u8(x) / keep) * keep / 255


def _posterize_increasing(x, level, sign, fill):
    return _posterize(4 - torch.floor(level * 4), x)  # 4 bits at level 0 ... 0 bits at level 1


def _posterize_inc0(x, level, sign, fill):
    return _posterize(torch.floor(level * 4), x)


def _solarize(threshold: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    q = _u8(x)
    return torch.where(q >= _per_sample(threshold), 255 - q, q) / 255


def _solarize_increasing(x, level, sign, fill):
    return _solarize(256 - torch.floor(level * 256), x)


def _solarize_inc0(x, level, sign, fill):
    return _solarize(torch.floor(level * 256), x)


def _solarize_add(x, level, sign, fill):
    q = _u8(x)
    add = _per_sample(torch.floor(level * 110))
    return torch.where(q < 128, (q + add).clamp_(max=255), q) / 255


def _color(x, level, sign, fill):
    return _blend(_gray(x), x, _enhance_factor(level, sign))


def _contrast(x, level, sign, fill):
    mean = (_u8(_gray(x)[:, :1]).mean(dim=(1, 2, 3), keepdim=True) + 0.5).floor() / 255
    return _blend(mean.expand_as(x), x, _enhance_factor(level, sign))


def _brightness(x, level, sign, fill):
    return _blend(torch.zeros_like(x), x, _enhance_factor(level, sign))


def _sharpness(x, level, sign, fill):
    # PIL's SMOOTH filter (1 1 1 / 1 5 1 / 1 1 1) / 13 on the interior; the border stays.
    c = x.shape[1]
    kernel = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(x, kernel.expand(c, 1, 3, 3), groups=c)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, _enhance_factor(level, sign))


def _warp(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` at ``matrix`` (B, 2, 3) applied to output pixel offsets from the centre
    (pixel units), bilinear; pixels from outside the image take ``fill``."""
    b, _, h, w = x.shape
    # To affine_grid's normalised coordinates: n = p / (size / 2), p = n * size / 2.
    scale = torch.tensor([w / 2, h / 2], dtype=x.dtype, device=x.device)
    theta = matrix.clone()
    theta[:, :, :2] = matrix[:, :, :2] * scale.view(1, 1, 2) / scale.view(1, 2, 1)
    theta[:, :, 2] = matrix[:, :, 2] / scale.view(1, 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def _affine(a, b, c, d, tx, ty):
    return torch.stack([torch.stack([a, b, tx], -1), torch.stack([c, d, ty], -1)], -2)


def _rotate(x, level, sign, fill):
    angle = torch.deg2rad(30.0 * level * sign)  # timm: 30 degrees at magnitude 10
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    return _warp(x, _affine(cos, -sin, sin, cos, zero, zero), fill)


def _shear_x(x, level, sign, fill):
    s, one, zero = 0.3 * level * sign, torch.ones_like(level), torch.zeros_like(level)
    return _warp(x, _affine(one, s, zero, one, zero, zero), fill)


def _shear_y(x, level, sign, fill):
    s, one, zero = 0.3 * level * sign, torch.ones_like(level), torch.zeros_like(level)
    return _warp(x, _affine(one, zero, s, one, zero, zero), fill)


def _translate_x(x, level, sign, fill):
    t, one, zero = 0.45 * level * sign * x.shape[3], torch.ones_like(level), torch.zeros_like(level)
    return _warp(x, _affine(one, zero, zero, one, t, zero), fill)


def _translate_y(x, level, sign, fill):
    t, one, zero = 0.45 * level * sign * x.shape[2], torch.ones_like(level), torch.zeros_like(level)
    return _warp(x, _affine(one, zero, zero, one, zero, t), fill)


_OP_FNS = {
    "AutoContrast": _auto_contrast, "Equalize": _equalize, "Invert": _invert, "Rotate": _rotate,
    "PosterizeIncreasing": _posterize_increasing, "Posterize": _posterize_inc0,
    "SolarizeIncreasing": _solarize_increasing, "Solarize": _solarize_inc0, "SolarizeAdd": _solarize_add,
    "ColorIncreasing": _color, "Color": _color, "ContrastIncreasing": _contrast, "Contrast": _contrast,
    "BrightnessIncreasing": _brightness, "Brightness": _brightness, "SharpnessIncreasing": _sharpness,
    "Sharpness": _sharpness, "ShearX": _shear_x, "ShearY": _shear_y, "TranslateXRel": _translate_x,
    "TranslateYRel": _translate_y,
}
