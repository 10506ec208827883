"""Random erasing (Zhong et al. 2020) of a normalised batch on the device, as timm's
``RandomErasing(mode="pixel")``, with per-sample boxes drawn from a seeded generator.

Written here rather than taken from kornia: kornia's ``RandomErasing`` draws from the global RNG.
"""

from __future__ import annotations

import dataclasses
import math

import torch

__all__ = ["ErasingParams", "sample_erasing", "random_erase"]

@dataclasses.dataclass(frozen=True)
class ErasingParams:
    """Per-sample boxes ``(y0, y1, x0, x1)`` (B, 4) and ``erase`` (B,) bool."""

    box: torch.Tensor
    erase: torch.Tensor


def sample_erasing(batch: int, height: int, width: int, prob: float, generator: torch.Generator,
                   scale: tuple[float, float] = (0.02, 1 / 3), ratio: tuple[float, float] = (0.3, 1 / 0.3),
                   attempts: int = 10) -> ErasingParams:
    """timm's ``RandomErasing`` draws: with probability ``prob`` a box of area ``scale`` of the image
    and log-uniform aspect ``ratio``; the first of ``attempts`` tries that fits (else no box)."""
    area = height * width
    chosen = torch.rand(batch, generator=generator) < prob
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(batch, attempts, generator=generator))
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(batch, attempts, generator=generator)
    aspect = torch.exp(log_r)
    h = torch.round(torch.sqrt(target * aspect)).long()
    w = torch.round(torch.sqrt(target / aspect)).long()
    fits = (h < height) & (w < width) & (h > 0) & (w > 0)
    first = torch.where(fits.any(1), fits.long().argmax(1), 0)
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    u = torch.rand(batch, 2, generator=generator)
    top = (u[:, 0] * (height - h + 1).clamp_min(1)).long()
    left = (u[:, 1] * (width - w + 1).clamp_min(1)).long()
    return ErasingParams(torch.stack([top, top + h, left, left + w], 1), chosen & fits.any(1))


def random_erase(x: torch.Tensor, params: ErasingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill each chosen box of the normalised batch ``x`` with per-pixel N(0, 1) noise (timm's
    ``mode='pixel'``, after normalisation); ``generator`` (on ``x``'s device) draws the noise."""
    b, _, h, w = x.shape
    box = params.box.to(x.device).view(b, 4, 1, 1)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= box[:, 0]) & (ys < box[:, 1]) & (xs >= box[:, 2]) & (xs < box[:, 3])
    inside &= params.erase.to(x.device).view(b, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(inside.unsqueeze(1), noise, x)
