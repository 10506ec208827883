"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch, with timm's semantics.

Each sample ``i`` is mixed with sample ``B - 1 - i`` (the batch reversed), as timm's ``Mixup``:
Mixup blends the two images with ratio ``lam``; CutMix pastes a box of the partner whose area is
``1 - lam`` (``lam`` then corrected to the box actually pasted, after clipping at the border). The
targets are the label-smoothed one-hot vectors blended with the same ``lam``, so they sum to 1.

The random choices are drawn by :func:`sample_mix` from a NumPy ``Generator`` (the Beta draws)
that the caller seeds, never from a global RNG, and applied by the pure :func:`mix_images`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import UserInputError

__all__ = ["MixSettings", "MixParams", "sample_mix", "mix_images", "mix_targets", "smooth_targets"]

MODES = ("batch", "elem")  # timm's Mixup modes: one ratio per batch, or one per sample


@dataclasses.dataclass
class MixSettings:
    """timm's ``Mixup`` arguments: ``mixup_alpha``/``cutmix_alpha`` (0 = that one off), ``prob``
    of mixing a batch (``batch`` mode) or a sample (``elem``), ``switch_prob`` of CutMix when both
    are on, and ``mode``. The training configuration's ``mix`` section is this record
    (``train.config.MixConfig`` adds only the config's checks)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserInputError(f"mix mode must be one of {MODES}, got {self.mode!r}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise UserInputError("mixup_alpha and cutmix_alpha must be >= 0")
        if not (0 <= self.prob <= 1 and 0 <= self.switch_prob <= 1):
            raise UserInputError(f"mix prob and switch_prob must be in [0, 1], got {self.prob!r} and {self.switch_prob!r}")

    @property
    def active(self) -> bool:
        """Whether any batch is mixed (both alphas 0, or ``prob`` 0: the paper's recipe)."""
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0


@dataclasses.dataclass(frozen=True)
class MixParams:
    """One batch's mixing: ``lam`` (B,) the weight of each sample's own label, ``cutmix`` (B,) bool,
    ``box`` (B, 4) the pasted box ``(y0, y1, x0, x1)`` of CutMix samples (empty for the others)."""

    lam: torch.Tensor
    cutmix: torch.Tensor
    box: torch.Tensor


def _box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[list[int], float]:
    """timm's ``rand_bbox`` + ``correct_lam``: a box of side ``sqrt(1 - lam)`` of the image at a
    uniform centre, clipped at the border; ``lam`` recomputed from the clipped area."""
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = int(np.clip(cy - cut_h // 2, 0, height)), int(np.clip(cy + cut_h // 2, 0, height))
    x0, x1 = int(np.clip(cx - cut_w // 2, 0, width)), int(np.clip(cx + cut_w // 2, 0, width))
    return [y0, y1, x0, x1], 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)


def _draw(s: MixSettings, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` ratios and CutMix flags, in timm's order of draws (``_params_per_elem``)."""
    lam, cut = np.ones(n), np.zeros(n, dtype=bool)
    if s.mixup_alpha > 0 and s.cutmix_alpha > 0:
        cut = rng.random(n) < s.switch_prob
        lam_mix = np.where(cut, rng.beta(s.cutmix_alpha, s.cutmix_alpha, n), rng.beta(s.mixup_alpha, s.mixup_alpha, n))
    elif s.mixup_alpha > 0:
        lam_mix = rng.beta(s.mixup_alpha, s.mixup_alpha, n)
    elif s.cutmix_alpha > 0:
        cut = np.ones(n, dtype=bool)
        lam_mix = rng.beta(s.cutmix_alpha, s.cutmix_alpha, n)
    else:
        return lam, cut
    mixed = rng.random(n) < s.prob
    return np.where(mixed, lam_mix, lam), cut & mixed


def sample_mix(settings: MixSettings, batch: int, height: int, width: int, rng: np.random.Generator) -> MixParams:
    """Draw one batch's mixing from ``rng``: one ratio (and box) for the batch in ``batch`` mode, one
    per sample in ``elem`` mode."""
    n = 1 if settings.mode == "batch" else batch
    lam, cut = _draw(settings, n, rng)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i in np.flatnonzero(cut & (lam < 1)):
        box, lam[i] = _box(float(lam[i]), height, width, rng)
        boxes[i] = box
    if settings.mode == "batch":
        lam, cut, boxes = np.repeat(lam, batch), np.repeat(cut, batch), np.repeat(boxes, batch, axis=0)
    return MixParams(torch.from_numpy(lam.astype(np.float32)), torch.from_numpy(cut), torch.from_numpy(boxes))


def mix_images(x: torch.Tensor, params: MixParams) -> torch.Tensor:
    """Mix each image of ``x`` (B, C, H, W) with its partner in the reversed batch: a blend
    ``lam * x + (1 - lam) * partner`` (Mixup) or the partner's box pasted in (CutMix)."""
    b, _, h, w = x.shape
    partner = x.flip(0)
    lam = params.lam.to(x.device, x.dtype).view(b, 1, 1, 1)
    blended = x * lam + partner * (1 - lam)
    if not bool(params.cutmix.any()):
        return blended
    box = params.box.to(x.device).view(b, 4, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= box[:, 0]) & (ys < box[:, 1]) & (xs >= box[:, 2]) & (xs < box[:, 3])
    pasted = torch.where(inside.unsqueeze(1), partner, x)
    return torch.where(params.cutmix.to(x.device).view(b, 1, 1, 1), pasted, blended)


def smooth_targets(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing as timm: ``1 - smoothing + smoothing / K`` on the label,
    ``smoothing / K`` elsewhere (Szegedy et al. 2016, §7)."""
    off = smoothing / num_classes
    return F.one_hot(y, num_classes).to(torch.float32) * (1.0 - smoothing) + off


def mix_targets(y: torch.Tensor, num_classes: int, lam: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """The targets of a mixed batch: ``lam * t(y) + (1 - lam) * t(reversed y)`` with ``t`` the
    smoothed one-hot vectors (timm's ``mixup_target``); each row sums to 1."""
    t = smooth_targets(y, num_classes, smoothing)
    lam = lam.to(t.device).view(-1, 1)
    return t * lam + t.flip(0) * (1 - lam)
