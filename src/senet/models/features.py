"""``features_only`` backbones: the feature maps of selected stages, for detectors and segmenters.

Semantics follow timm: ``model.feature_info`` lists the points where a stage's output can be
taken (``num_chs``, ``reduction`` = stride w.r.t. the input, ``module`` = the submodule whose
output it is), and ``out_indices`` selects among them (negative indices count from the end).
The wrapper records those outputs with forward hooks while the network's own
``forward_features`` runs, so every family works without being restructured.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["FeatureInfo", "FeatureExtractor"]


class FeatureInfo(list):
    """A list of ``{"num_chs", "reduction", "module"}`` dicts with timm's helper methods."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


def select(info: Sequence[dict[str, Any]], out_indices: Sequence[int] | None) -> list[int]:
    """Normalised, validated indices into ``info`` (default: all of them)."""
    n = len(info)
    if out_indices is None:
        return list(range(n))
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    idx = []
    for i in out_indices:
        if not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"out_indices={tuple(out_indices)}: each must be an int in [{-n}, {n - 1}] "
                             f"(this model has {n} feature levels: {[f['module'] for f in info]})")
        idx.append(i % n)
    if len(set(idx)) != len(idx):
        raise ValueError(f"out_indices={tuple(out_indices)} names a level twice")
    return sorted(idx)


class FeatureExtractor(nn.Module):
    """Wraps a network; ``forward(x)`` returns the list of the selected stages' feature maps
    (shallow to deep). ``feature_info`` lists only the selected levels."""

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = model.feature_info
        self.out_indices = tuple(select(info, out_indices))
        self.feature_info = FeatureInfo(dict(info[i]) for i in self.out_indices)
        self.model = model
        self._names = [f["module"] for f in self.feature_info]
        for name in self._names:
            model.get_submodule(name)  # fail now on a wrong module name

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        from .common import check_input

        check_input(self.model, x)
        found: dict[str, torch.Tensor] = {}
        handles = [self.model.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: found.__setitem__(n, o)) for n in self._names]
        try:
            self.model.forward_features(x)
        finally:
            for h in handles:
                h.remove()
        return [found[n] for n in self._names]
