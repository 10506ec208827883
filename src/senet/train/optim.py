"""Optimisers and parameter groups.

:func:`param_groups` is a pure function of the model's parameters: it decides which tensors get
weight decay. The paper's recipes decay every weight (§5.1, weight decay 1e-4 from the authors'
repository); many later recipes exempt BN scales/shifts and biases, which is
``decay_norm_and_bias=False`` (timm's ``filter_bias_and_bn``: then the names the model declares in
``no_weight_decay()`` are exempt too, as timm's ``create_optimizer_v2``). :func:`layer_decay_groups`
gives each depth of ``model.group_matcher()`` its ``lr_scale`` (layer-wise learning-rate decay, timm's
``param_groups_layer_decay``); the schedule multiplies each group's scale in (``epoch._set_lr``).
"""

from __future__ import annotations

from typing import Any, Iterable

import math
import re

import torch
from torch import nn

from ..validation import check_choice
from .choices import OPTIMIZERS
from .config import OptimConfig
from .lamb import Lamb
from .lars import Lars

__all__ = ["param_groups", "layer_depths", "layer_decay_groups", "declared_no_decay", "build_optimizer",
           "restore_optimizer", "OPTIMIZERS"]


def _exempt(name: str, p: nn.Parameter, decay_norm_and_bias: bool, no_decay: frozenset[str]) -> bool:
    # timm's param_groups_weight_decay: 1-d tensors, biases and the model's own list.
    return not decay_norm_and_bias and (p.ndim <= 1 or name.endswith(".bias") or name in no_decay)


def declared_no_decay(model: nn.Module) -> frozenset[str]:
    """The names ``model.no_weight_decay()`` declares exempt from weight decay (timm's meaning:
    extra parameters such as position embeddings), or none."""
    declare = getattr(model, "no_weight_decay", None)
    return frozenset(declare()) if callable(declare) else frozenset()


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], weight_decay: float,
                 decay_norm_and_bias: bool = True, no_decay_names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and (optionally) a no-decay group.

    One-dimensional tensors (BN/GroupNorm scales and shifts, every bias) and ``no_decay_names``
    form the no-decay group when ``decay_norm_and_bias`` is false. Groups keep the model's
    parameter order, so optimiser state saved from one run loads into another built the same way.
    """
    names = frozenset(no_decay_names)
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        (no_decay if _exempt(name, p, decay_norm_and_bias, names) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def layer_depths(model: nn.Module) -> dict[str, int]:
    """``{parameter name: depth}`` from ``model.group_matcher()`` (timm's format), as timm's
    ``group_parameters``: parameters are keyed ``(0,)`` (stem), ``(1, *ordinal)`` (blocks),
    ``(2,)`` (head), ``(inf,)`` (no pattern matches), and the sorted distinct keys numbered 0, 1, ..."""
    groups = model.group_matcher(coarse=False)
    patterns = [(groups["stem"], (0.0,))]
    patterns += [(pat, (1.0, *map(float, ordinal))) for pat, ordinal in groups["blocks"]]
    patterns.append((groups["head"], (2.0,)))
    keys = {name: next((key for pat, key in patterns if re.match(pat, name)), (math.inf,))
            for name, _ in model.named_parameters()}
    number = {key: i for i, key in enumerate(sorted(set(keys.values())))}
    return {name: number[key] for name, key in keys.items()}


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float, decay_norm_and_bias: bool = True,
                       no_decay_names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Parameter groups for layer-wise learning-rate decay (Clark et al. 2020; timm's
    ``param_groups_layer_decay``): one group per (depth, decayed or not), in the model's parameter
    order, each with ``lr_scale = layer_decay ** (deepest - depth)``."""
    depths, names = layer_depths(model), frozenset(no_decay_names)
    deepest = max(depths.values())
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = _exempt(name, p, decay_norm_and_bias, names)
        key = (depths[name], exempt)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if exempt else weight_decay,
                           "lr_scale": layer_decay ** (deepest - depths[name])}
        groups[key]["params"].append(p)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam, AdamW, RMSProp, LAMB or LARS over :func:`param_groups` of ``model``
    (:func:`layer_decay_groups` with ``cfg.layer_decay``).

    The learning rate set here is overwritten before every step by the schedule (``lr_at``) times
    each group's ``lr_scale``.
    """
    check_choice("optim.name", cfg.name, OPTIMIZERS)
    exempt = () if cfg.decay_norm_and_bias else declared_no_decay(model)
    if cfg.layer_decay is not None:
        groups = layer_decay_groups(model, cfg.weight_decay, cfg.layer_decay, cfg.decay_norm_and_bias, exempt)
        for group in groups:
            group["lr"] = cfg.lr * group["lr_scale"]
    else:
        groups = param_groups(model.named_parameters(), cfg.weight_decay, cfg.decay_norm_and_bias, exempt)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, max_grad_norm=cfg.max_grad_norm)
    if cfg.name == "lars":
        return Lars(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, trust_coeff=cfg.trust_coeff)
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
