"""Paired comparison of a model with the reference (UNITER) over seeds, with a 95% t-interval.

Within a cell every model trains with the same seeds on the same data, so seed s of a model and seed s
of UNITER share their data, their batches' order and their initial draws as far as the architectures
allow: the per-seed differences remove the seed noise the two share. The study says a model *beats*
(or *trails*) UNITER only where the 95% interval of the mean difference excludes 0; otherwise "no
difference shown", which is not "no difference".

scipy is not a dependency: the t quantiles are a table (df 1-30, checked against a float64 numerical
integration in tests/test_study_stats.py) and a Cornish-Fisher expansion above 30.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

T975: dict[int, float] = {
    1: 12.706204736, 2: 4.302652730, 3: 3.182446305, 4: 2.776445105, 5: 2.570581836, 6: 2.446911851,
    7: 2.364624252, 8: 2.306004135, 9: 2.262157163, 10: 2.228138852, 11: 2.200985160, 12: 2.178812830,
    13: 2.160368656, 14: 2.144786688, 15: 2.131449546, 16: 2.119905299, 17: 2.109815578, 18: 2.100922040,
    19: 2.093024054, 20: 2.085963447, 21: 2.079613845, 22: 2.073873068, 23: 2.068657610, 24: 2.063898562,
    25: 2.059538553, 26: 2.055529439, 27: 2.051830516, 28: 2.048407142, 29: 2.045229642, 30: 2.042272456,
}
"""The 0.975 quantile of Student's t by degrees of freedom (two-sided 95%)."""

Z975 = 1.959963984540054

BEATS, TRAILS, NO_DIFFERENCE = "beats", "trails", "no difference shown"


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df in T975:
        return T975[df]
    z = Z975  # Cornish-Fisher: within 1e-5 of the exact quantile for df > 30
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class Paired:
    """A model's per-seed differences from the reference on one cell, and what they show.

    Attributes:
        seeds: the seeds both models have, in order (a seed one of them lacks is left out of both).
        diffs: model - reference per seed, in the metric's units (points).
        mean: mean difference (None without a seed in common).
        half_width: half the 95% t-interval of the mean (None with fewer than two seeds).
    """

    seeds: tuple[int, ...]
    diffs: tuple[float, ...]
    mean: Optional[float]
    half_width: Optional[float]

    @property
    def interval(self) -> Optional[tuple[float, float]]:
        if self.mean is None or self.half_width is None:
            return None
        return (self.mean - self.half_width, self.mean + self.half_width)

    @property
    def verdict(self) -> str:
        """``beats`` / ``trails`` where the interval excludes 0, else ``no difference shown``."""
        lo_hi = self.interval
        if lo_hi is None:
            return NO_DIFFERENCE
        lo, hi = lo_hi
        return BEATS if lo > 0 else TRAILS if hi < 0 else NO_DIFFERENCE

    def to_markdown(self) -> str:
        """``+1.2 [-0.3, +2.7] (3 seeds)``."""
        if self.mean is None:
            return "-"
        if self.interval is None:
            return f"{self.mean:+.1f} (1 seed)"
        lo, hi = self.interval
        return f"{self.mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def paired(model: Mapping[int, float], reference: Mapping[int, float]) -> Paired:
    """The paired comparison of ``model`` with ``reference`` ({seed: value} each)."""
    seeds = tuple(sorted(set(model) & set(reference)))
    diffs = tuple(float(model[s]) - float(reference[s]) for s in seeds)
    n = len(diffs)
    if n == 0:
        return Paired(seeds, diffs, None, None)
    mean = sum(diffs) / n
    if n < 2:
        return Paired(seeds, diffs, mean, None)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return Paired(seeds, diffs, mean, t975(n - 1) * sd / math.sqrt(n))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    m = sum(values) / n
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


__all__ = ["BEATS", "NO_DIFFERENCE", "Paired", "T975", "TRAILS", "mean_std", "paired", "t975"]
