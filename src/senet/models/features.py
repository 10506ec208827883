"""``features_only`` backbones: the feature maps of selected stages, for detectors and segmenters.

Semantics follow timm: ``model.feature_info`` lists the points where a stage's output can be
taken (``num_chs``, ``reduction`` = stride w.r.t. the input, ``module`` = the step whose output
it is), and ``out_indices`` selects among them: an int ``n`` the last ``n`` levels, a sequence
those levels (negative indices count from the end).
:class:`FeatureBackbone` prunes the network past the deepest selected level and runs its
``forward_intermediates``; its state_dict keys are the network's own (docs/backbones.md).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..errors import UserInputError, UserTypeError

__all__ = ["FeatureInfo", "FeatureBackbone", "select"]


class FeatureInfo(list):
    """A list of ``{"num_chs", "reduction", "module"}`` dicts, one per feature level, and the
    levels selected (``out_indices``: all of them on a classifier, the ones it returns on a
    ``features_only`` network), with timm's accessors: ``channels(idx)``, ``reduction(idx)``,
    ``module_name(idx)`` give the selected levels' values for ``idx=None``, the value of level
    ``idx`` for an int and a list for a list (an index counts among all levels, as in timm)."""

    def __init__(self, info: Iterable[dict[str, Any]] = (), out_indices: Sequence[int] | None = None) -> None:
        super().__init__(dict(f) for f in info)
        self._out_indices = None if out_indices is None else tuple(out_indices)

    @property
    def out_indices(self) -> tuple[int, ...]:
        return tuple(range(len(self))) if self._out_indices is None else self._out_indices

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """The ``key`` of the selected levels (``idx=None``), of level ``idx``, or of each level in ``idx``."""
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)


def select(info: Sequence[dict[str, Any]], out_indices: int | Sequence[int] | None) -> list[int]:
    """Normalised, validated ``out_indices`` into ``info``, as timm reads them: ``None`` all
    levels, an int ``n`` the last ``n`` (as ``forward_intermediates(indices=n)``), a sequence
    those levels (negative ones count from the end)."""
    n = len(info)
    if out_indices is None:
        return list(range(n))
    if isinstance(out_indices, bool) or not isinstance(out_indices, (int, list, tuple)):
        raise UserTypeError(f"out_indices must be an int (the last n levels) or a sequence of level indices, "
                        f"got {out_indices!r}")
    if isinstance(out_indices, int):
        if not 1 <= out_indices <= n:
            raise UserInputError(f"out_indices={out_indices}: an int takes the last n levels, 1 <= n <= {n} "
                             f"(this model has {n} feature levels: {[f['module'] for f in info]})")
        return list(range(n - out_indices, n))
    idx = []
    for i in out_indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise UserInputError(f"out_indices={tuple(out_indices)}: each must be an int in [{-n}, {n - 1}] "
                             f"(this model has {n} feature levels: {[f['module'] for f in info]})")
        idx.append(i % n)
    if not idx:
        raise UserInputError("out_indices=(): name at least one feature level")
    if len(set(idx)) != len(idx):
        raise UserInputError(f"out_indices={tuple(out_indices)} names a level twice")
    return sorted(idx)


class FeatureBackbone(nn.Module):
    """A network pruned to its feature levels ``out_indices``; ``forward(x)`` returns their maps,
    shallow to deep, and stops after the deepest one. ``out_indices`` as in :func:`select`.

    The network's head (and final norm) are pruned with ``prune_intermediate_layers``; its
    remaining children become this module's children under their own names, so the state_dict
    keys are the network's (a classifier checkpoint loads with ``strict=False``, only the pruned
    keys unexpected). ``feature_info`` holds every level of the network, with ``out_indices`` the
    selected ones (``feature_info.channels()`` their widths), as timm's feature networks. The
    network's card comes along (its classifier already removed by the pruning).
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
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.in_chans = model.in_chans
        self.min_input_size = getattr(model, "min_input_size", 1)
        update = getattr(getattr(model, "pretrained_cfg", None), "with_features", None)
        if update is not None:  # as timm sets pretrained_cfg on its feature networks: the view stays the model's,
            self.pretrained_cfg = self.default_cfg = update(self.out_indices)  # and card.build() builds this backbone

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)

    def train(self, mode: bool = True) -> "FeatureBackbone":
        super().train(mode)
        self.model.training = mode
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the network's stages (see ``ModelBase.set_grad_checkpointing``)."""
        self.model.set_grad_checkpointing(enable)
