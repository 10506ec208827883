"""Seed statistics for paired comparisons: pure functions, no I/O.

With a handful of seeds, the honest statement about "SE beats the baseline by x" is whether x
exceeds the seed-to-seed spread. We use the standard error of the difference of two means
(Welch) and call a difference resolved only when it exceeds twice that.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from ..errors import UserInputError

__all__ = ["Summary", "summarize", "Difference", "difference"]


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (n - 1) and count of a metric over seeds."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"

    @property
    def stderr(self) -> float:
        """Standard error of the mean, ``std / sqrt(n)`` (NaN for a single value)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation; std is 0 for a single value."""
    if not values:
        raise UserInputError("cannot summarise an empty list of values")
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Summary(mean, math.sqrt(var), n)


@dataclasses.dataclass(frozen=True)
class Difference:
    """``a - b`` of two seed groups with the standard error of that difference."""

    delta: float
    stderr: float
    resolved: bool  # |delta| > 2 x stderr (and more than one seed on each side)

    def statement(self, metric: str, a: str, b: str, lower_is_better: bool = True) -> str:
        """One honest sentence about the difference."""
        if math.isnan(self.stderr):
            return (f"{metric}: {a} - {b} = {self.delta:+.2f}; one seed per side, so the seed-to-seed "
                    f"spread is unknown and no claim is made.")
        better = (self.delta < 0) == lower_is_better
        if self.resolved:
            return (f"{metric}: {a} - {b} = {self.delta:+.2f} (standard error {self.stderr:.2f}); the difference "
                    f"exceeds twice the seed-to-seed standard error, so {a if better else b} is better on this data.")
        return (f"{metric}: {a} - {b} = {self.delta:+.2f} (standard error {self.stderr:.2f}); within twice the "
                f"seed-to-seed standard error, so these runs do not resolve a difference.")


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Difference of means with the Welch standard error sqrt(s_a^2 / n_a + s_b^2 / n_b)."""
    sa, sb = summarize(a), summarize(b)
    delta = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return Difference(delta, math.nan, False)
    stderr = math.sqrt(sa.std**2 / sa.n + sb.std**2 / sb.n)
    return Difference(delta, stderr, abs(delta) > 2 * stderr)
