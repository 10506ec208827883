"""Learning-rate schedules as pure functions of the (fractional) epoch.

The trainer calls :func:`lr_at` before every step with ``epoch + step / steps_per_epoch``, so a
step schedule drops exactly at epoch boundaries (the paper's ÷10 every 30 epochs, §5.1) while
cosine and warm-up move smoothly. Nothing here holds state: resuming a run only needs the epoch.
"""

from __future__ import annotations

import math
from typing import Callable

from ..validation import check_choice
from .choices import SCHEDULES
from .config import ScheduleConfig, TrainConfig

__all__ = ["lr_at", "FACTORS", "step_factor", "multistep_factor", "cosine_factor", "warmup_factor"]


def step_factor(epoch: float, s: ScheduleConfig, total: int) -> float:
    """``gamma ** floor(epoch / step_size)``: ÷10 every 30 epochs in the paper's ImageNet recipe (§5.1)."""
    return s.gamma ** math.floor(epoch / s.step_size)


def multistep_factor(epoch: float, s: ScheduleConfig, total: int) -> float:
    """``gamma`` to the number of ``milestones`` passed (e.g. He et al.'s CIFAR drops at 82/123 epochs)."""
    return s.gamma ** sum(epoch >= m for m in s.milestones)


def cosine_factor(epoch: float, s: ScheduleConfig, total: int) -> float:
    """Half a cosine from 1 at the end of warm-up to 0 at ``total`` epochs (``min_lr`` is added by lr_at)."""
    span = max(total - s.warmup_epochs, 1e-12)
    t = min(max(epoch - s.warmup_epochs, 0.0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def constant_factor(epoch: float, s: ScheduleConfig, total: int) -> float:
    return 1.0


# One factor function per schedule name of choices.SCHEDULES (tests/test_train_schedule.py checks they agree).
FACTORS: dict[str, Callable[[float, ScheduleConfig, int], float]] = {
    "constant": constant_factor,
    "step": step_factor,
    "multistep": multistep_factor,
    "cosine": cosine_factor,
}


def warmup_factor(epoch: float, s: ScheduleConfig) -> float:
    """Linear ramp from ``warmup_start_factor`` to 1 over ``warmup_epochs`` (1 afterwards)."""
    if s.warmup_epochs <= 0 or epoch >= s.warmup_epochs:
        return 1.0
    return s.warmup_start_factor + (1.0 - s.warmup_start_factor) * epoch / s.warmup_epochs


def lr_at(epoch: float, cfg: TrainConfig) -> float:
    """The learning rate at fractional ``epoch`` (0 = first step) for ``cfg.optim.lr`` and ``cfg.schedule``."""
    s = cfg.schedule
    check_choice("schedule.name", s.name, SCHEDULES)
    base = cfg.optim.lr
    if s.name == "cosine":
        lr = s.min_lr + (base - s.min_lr) * cosine_factor(epoch, s, cfg.epochs)
    else:
        lr = base * FACTORS[s.name](epoch, s, cfg.epochs)
    return lr * warmup_factor(epoch, s)
