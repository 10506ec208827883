"""``features_only`` backbones: the feature maps of selected stages, for detectors and segmenters.

Semantics follow timm: ``model.feature_info`` lists the points where a stage's output can be
taken (``num_chs``, ``reduction`` = stride w.r.t. the input, ``module`` = the step whose output
it is), and ``out_indices`` selects among them (negative indices count from the end).
:class:`FeatureBackbone` prunes the network past the deepest selected level and runs its
``forward_intermediates``; its state_dict keys are the network's own (docs/backbones.md).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import UserInputError

__all__ = ["FeatureInfo", "FeatureBackbone", "select"]


class FeatureInfo(list):
    """A list of ``{"num_chs", "reduction", "module"}`` dicts with timm's helper methods."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


def select(info: Sequence[dict[str, Any]], out_indices: int | Sequence[int] | None) -> list[int]:
    """Normalised, validated ``out_indices`` into ``info`` (default: all of them; an int is one level)."""
    n = len(info)
    if out_indices is None:
        return list(range(n))
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    idx = []
    for i in out_indices:
        if not isinstance(i, int) or not -n <= i < n:
            raise UserInputError(f"out_indices={tuple(out_indices)}: each must be an int in [{-n}, {n - 1}] "
                                 f"(this model has {n} feature levels: {[f['module'] for f in info]})")
        idx.append(i % n)
    if len(set(idx)) != len(idx):
        raise UserInputError(f"out_indices={tuple(out_indices)} names a level twice")
    return sorted(idx)


class FeatureBackbone(nn.Module):
    """A network pruned to its feature levels ``out_indices``; ``forward(x)`` returns their maps,
    shallow to deep, and stops after the deepest one.

    The network's head (and final norm) are pruned with ``prune_intermediate_layers``; its
    remaining children become this module's children under their own names, so the state_dict
    keys are the network's (a classifier checkpoint loads with ``strict=False``, only the pruned
    keys unexpected). ``feature_info`` lists the selected levels.
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = tuple(select(model.feature_info, out_indices))
        model.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        if next(model.named_parameters(recurse=False), None) or next(model.named_buffers(recurse=False), None):
            raise UserInputError(f"{type(model).__name__} holds tensors outside its submodules; features_only "
                                 "needs every weight inside a stem or stage module")
        for name, child in model.named_children():
            self.add_module(name, child)
        self.__dict__["model"] = model  # the same modules; not registered, so keys get no "model." prefix
        self.feature_info = type(model.feature_info)(dict(model.feature_info[i]) for i in self.out_indices)
        self.in_chans = model.in_chans
        self.min_input_size = getattr(model, "min_input_size", 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)

    def train(self, mode: bool = True) -> "FeatureBackbone":
        super().train(mode)
        self.model.training = mode
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the network's stages (see ``ModelBase.set_grad_checkpointing``)."""
        self.model.set_grad_checkpointing(enable)
