"""Excitation statistics per class and per SE block (paper §7.2, Fig. 6-7).

The paper reads the role of excitation from class-averaged gate activations: early blocks are
class-agnostic, later ones class-specific, and the last stage's gates saturate near 1, so those
blocks can be removed for little loss (§7.2, §4). This module measures that with forward hooks
on each SE block's ``gate`` (no model is forked or edited) and two figures of merit:

* **class specificity**: the share of the gate's variance over samples that lies between
  classes (eta squared, averaged over channels; 0 = class-agnostic, 1 = fully determined by
  the class);
* **near identity**: the share of gate values within ``tol`` of 1 (the block leaves those
  channels almost untouched).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserInputError
from ..layers.se import ConstantGate, SqueezeExcite

__all__ = [
    "GateRecorder",
    "ExcitationStats",
    "record_excitations",
    "se_blocks",
    "fixed_gates",
    "gate_removal_study",
]


def se_blocks(model: nn.Module, pattern: str | None = None) -> dict[str, SqueezeExcite]:
    """The model's SE blocks by qualified name, in registration (= forward, for our nets) order."""
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    if pattern is not None:
        blocks = {n: m for n, m in blocks.items() if fnmatch.fnmatchcase(n, pattern)}
    if not blocks:
        what = f" matching {pattern!r}" if pattern else ""
        raise UserInputError(f"{type(model).__name__} has no SE blocks{what}")
    return blocks


class GateRecorder:
    """Context manager that hooks the gate of SE blocks and keeps the last batch's excitations.

    ``recorder.last[name]`` is an (N, C) tensor after each forward (NoSqueeze gates, which vary
    over positions, are averaged over them). The hooks are removed on exit.
    """

    def __init__(self, model: nn.Module, blocks: Sequence[str] | None = None) -> None:
        found = se_blocks(model)
        names = list(found) if blocks is None else list(blocks)
        missing = [n for n in names if n not in found]
        if missing:
            raise UserInputError(f"not SE blocks of this model: {missing}; SE blocks are {list(found)}")
        self.blocks = {n: found[n] for n in names}
        self.last: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "GateRecorder":
        for name, block in self.blocks.items():
            self._handles.append(block.gate.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: object, out: torch.Tensor) -> None:
            self.last[name] = out.detach().float().flatten(2).mean(2)

        return hook


@dataclasses.dataclass
class ExcitationStats:
    """Per-class mean excitation of each SE block over a dataset, and the figures of merit."""

    blocks: list[str]
    classes: list[str]
    counts: np.ndarray  # (K,) samples per class
    class_means: dict[str, np.ndarray]  # block -> (K, C)
    overall_mean: dict[str, np.ndarray]  # block -> (C,)
    specificity: dict[str, float]
    near_identity: dict[str, float]
    tol: float

    def stage_of(self, block: str) -> str:
        """The top-level part holding a block (``layer4`` for ``layer4.2.se``)."""
        return block.split(".", 1)[0]

    def as_dict(self) -> dict[str, object]:
        return {
            "classes": self.classes,
            "counts": self.counts.tolist(),
            "tol": self.tol,
            "blocks": {
                b: {
                    "specificity": self.specificity[b],
                    "near_identity": self.near_identity[b],
                    "overall_mean": self.overall_mean[b].tolist(),
                    "class_means": self.class_means[b].tolist(),
                }
                for b in self.blocks
            },
        }


def record_excitations(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    *,
    classes: Sequence[str] | None = None,
    blocks: Sequence[str] | None = None,
    tol: float = 0.05,
    device: torch.device | str | None = None,
) -> ExcitationStats:
    """Run ``model`` (in eval mode) over ``batches`` of (images, labels) and gather statistics.

    Sums, sums of squares and near-identity counts are accumulated per class in float64, so the
    result does not depend on the batch size.
    """
    if not 0 < tol < 1:
        raise UserInputError(f"tol must be in (0, 1), got {tol}")
    classes = list(classes) if classes is not None else [str(k) for k in range(num_classes)]
    if len(classes) != num_classes:
        raise UserInputError(f"{len(classes)} class names for num_classes={num_classes}")
    se_blocks(model)  # fail early, naming the problem, on a model without SE blocks
    device = torch.device(device) if device is not None else next(model.parameters()).device
    counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    near: dict[str, float] = {}
    total_values: dict[str, float] = {}
    was_training = model.training
    model.eval()
    try:
        with GateRecorder(model, blocks) as rec, torch.no_grad():
            for x, y in batches:
                x, y = x.to(device), y.to(device)
                if y.min() < 0 or y.max() >= num_classes:
                    raise UserInputError(f"labels must lie in [0, {num_classes}), got range [{y.min()}, {y.max()}]")
                model(x)
                counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
                for name, s in rec.last.items():
                    s = s.double()
                    if name not in sums:
                        sums[name] = torch.zeros(num_classes, s.shape[1], dtype=torch.float64, device=device)
                        squares[name] = torch.zeros_like(sums[name])
                        near[name], total_values[name] = 0.0, 0.0
                    sums[name].index_add_(0, y, s)
                    squares[name].index_add_(0, y, s * s)
                    near[name] += float((s >= 1 - tol).sum())
                    total_values[name] += s.numel()
    finally:
        model.train(was_training)
    if not sums:
        raise UserInputError("no batches were given, so no excitation was recorded")
    names = list(rec.blocks)
    n = counts.sum()
    present = counts > 0
    stats = ExcitationStats(names, classes, counts.cpu().numpy(), {}, {}, {}, {}, tol)
    for name in names:
        s1, s2 = sums[name], squares[name]
        class_mean = s1 / counts.clamp(min=1)[:, None]
        mean = s1.sum(0) / n
        ss_total = s2.sum(0) - n * mean**2
        ss_between = (counts[present, None] * (class_mean[present] - mean) ** 2).sum(0)
        # Channels whose gate never varies carry no class information: specificity 0.
        varying = ss_total > 1e-12 * n
        eta2 = torch.where(varying, ss_between / ss_total.clamp(min=1e-300), torch.zeros_like(mean))
        stats.class_means[name] = class_mean.cpu().numpy()
        stats.overall_mean[name] = mean.cpu().numpy()
        stats.specificity[name] = float(eta2.clamp(0, 1).mean())
        stats.near_identity[name] = near[name] / total_values[name]
    return stats


@contextlib.contextmanager
def fixed_gates(
    model: nn.Module, blocks: Sequence[str], value: str = "one", stats: ExcitationStats | None = None
) -> Iterator[None]:
    """Temporarily replace the gates of ``blocks`` by constants: ``"one"`` (the block does nothing,
    §7.2's removal) or ``"mean"`` (each channel held at its dataset-mean excitation from ``stats``)."""
    if value not in ("one", "mean"):
        raise UserInputError(f"value={value!r} is not supported; allowed values: 'one', 'mean'")
    if value == "mean" and stats is None:
        raise UserInputError("value='mean' needs the ExcitationStats of the dataset (stats=...)")
    found = se_blocks(model)
    missing = [b for b in blocks if b not in found]
    if missing:
        raise UserInputError(f"not SE blocks of this model: {missing}")
    saved = {b: found[b].gate for b in blocks}
    try:
        for b in blocks:
            ref = next(found[b].parameters())
            const = (1.0 if value == "one"
                     else torch.as_tensor(stats.overall_mean[b], dtype=torch.float32))  # type: ignore[union-attr]
            found[b].gate = ConstantGate(const).to(ref.device)
        yield
    finally:
        for b, gate in saved.items():
            found[b].gate = gate


def gate_removal_study(
    model: nn.Module,
    stats: ExcitationStats,
    blocks: Sequence[str],
    evaluate: Callable[[nn.Module], dict[str, float]],
) -> dict[str, object]:
    """§7.2's test: accuracy with the ``blocks``' gates as learned, fixed at 1, and fixed at their
    dataset means, against the parameters that dropping those blocks would save."""
    found = se_blocks(model)
    saved_params = sum(p.numel() for b in blocks for p in found[b].parameters())
    total = sum(p.numel() for p in model.parameters())
    result: dict[str, object] = {"blocks": list(blocks), "params_saved": saved_params,
                                 "params_saved_share": saved_params / total, "learned": evaluate(model)}
    for value in ("one", "mean"):
        with fixed_gates(model, blocks, value, stats):
            result[f"fixed_{value}"] = evaluate(model)
    return result
