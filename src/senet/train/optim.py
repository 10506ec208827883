"""Optimisers and parameter groups.

:func:`param_groups` is a pure function of the model's parameters: it decides which tensors get
weight decay. The paper's recipes decay every weight (§5.1, weight decay 1e-4 from the authors'
repository); many later recipes exempt BN scales/shifts and biases, which is
``decay_norm_and_bias=False``.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..validation import check_choice
from .choices import OPTIMIZERS
from .config import OptimConfig

__all__ = ["param_groups", "build_optimizer", "restore_optimizer", "OPTIMIZERS"]



def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 decay_norm_and_bias: bool = True) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and (optionally) a no-decay group.

    One-dimensional tensors (BN/GroupNorm scales and shifts, every bias) form the no-decay group
    when ``decay_norm_and_bias`` is false. Groups keep the model's parameter order, so optimiser
    state saved from one run loads into another built the same way.
    """
    decay, no_decay = [], []
    for _, p in named_params:
        if not p.requires_grad:
            continue
        (decay if decay_norm_and_bias or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam, AdamW or RMSProp over :func:`param_groups` of ``model``.

    The learning rate set here is overwritten before every step by the schedule (``lr_at``).
    """
    check_choice("optim.name", cfg.name, OPTIMIZERS)
    groups = param_groups(model.named_parameters(), cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Load a saved optimiser ``state`` into ``optimizer`` (built from the current config) but keep
    the current config's hyperparameters (weight decay, momentum, betas...): ``load_state_dict``
    alone would bring back the saved ones. The learning rate is the schedule's (``lr_at``) and is
    left as saved. Returns ``{name: (saved, now)}`` for each hyperparameter that changed."""
    wanted = [{k: v for k, v in g.items() if k not in ("params", "lr")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    changed: dict[str, tuple[Any, Any]] = {}
    for group, settings in zip(optimizer.param_groups, wanted):
        for key, value in settings.items():
            if _plain(group.get(key)) != _plain(value):
                changed.setdefault(key, (group.get(key), value))
                group[key] = value
    return changed


def _plain(value: Any) -> Any:  # saved betas may come back as a list
    return tuple(value) if isinstance(value, (list, tuple)) else value
