"""Training losses: cross-entropy on labels or on soft (mixed) targets, and binary cross-entropy.

Cross-entropy on integer labels is the paper's loss (with label smoothing for the §6 ablations).
With Mixup/CutMix the targets are soft vectors (:mod:`senet.data.mix`): cross-entropy becomes
``-sum(t * log_softmax(z))`` (timm's ``SoftTargetCrossEntropy``). "ResNet strikes back" (Wightman
et al. 2021, §3.1) trains with binary cross-entropy on the same targets instead, optionally
thresholded (timm's ``BinaryCrossEntropy(target_threshold=...)``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..data.mix import smooth_targets
from ..validation import check_choice
from .choices import LOSSES

__all__ = ["soft_cross_entropy", "binary_cross_entropy", "training_loss", "LOSSES"]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k t_k log softmax(z)_k``."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


def binary_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
    """One sigmoid per class against ``targets`` (B, K) in [0, 1], averaged over batch and classes;
    with ``threshold``, targets above it count as 1 and the rest as 0 (timm's ``target_threshold``)."""
    if threshold is not None:
        targets = targets.gt(threshold).to(targets.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets)


def training_loss(logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, *, loss: str = "ce",
                  label_smoothing: float = 0.0, bce_target_thresh: float | None = None) -> torch.Tensor:
    """The loss of one training batch: ``targets`` are the soft targets of a mixed batch (already
    smoothed), or None to use the labels ``y`` with ``label_smoothing``."""
    check_choice("loss", loss, LOSSES)
    logits = logits.float()
    if loss == "ce":
        if targets is None:  # the paper's loss, exactly as before
            return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        return soft_cross_entropy(logits, targets)
    if targets is None:
        targets = smooth_targets(y, logits.shape[-1], label_smoothing)
    return binary_cross_entropy(logits, targets, bce_target_thresh)
