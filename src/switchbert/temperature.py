"""Gumbel-softmax temperature schedules: pure functions of the optimizer step (docs/method.md §3.2 step 7).

The paper anneals tau "from high to low, non-zero" without numbers; our default [ours] decays
exponentially from 5 to 0.1 over a stage and restarts at each stage (pretraining, fine-tuning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TemperatureSchedule:
    """tau(step) for one training stage.

    Attributes:
        tau_max: temperature at step 0.
        tau_min: temperature at the last step and after.
        kind: "exp" (geometric decay) or "linear".
        total_steps: steps in the stage.
    """

    total_steps: int
    tau_max: float = 5.0
    tau_min: float = 0.1
    kind: str = "exp"

    def __post_init__(self) -> None:
        if not (self.tau_max >= self.tau_min > 0):
            raise ValueError(f"need tau_max >= tau_min > 0, got tau_max={self.tau_max}, tau_min={self.tau_min}")
        if self.kind not in ("exp", "linear"):
            raise ValueError(f"TemperatureSchedule.kind must be 'exp' or 'linear', got {self.kind!r}")
        if self.total_steps < 1:
            raise ValueError(f"TemperatureSchedule.total_steps must be >= 1, got {self.total_steps}")

    def __call__(self, step: int) -> float:
        return temperature_at(step, self.total_steps, self.tau_max, self.tau_min, self.kind)


def temperature_at(step: int, total_steps: int, tau_max: float = 5.0, tau_min: float = 0.1, kind: str = "exp") -> float:
    """Temperature at ``step`` of a stage of ``total_steps`` steps (step counted from the stage's start).

    exp:    tau_max * (tau_min / tau_max) ** (step / (total_steps - 1))
    linear: tau_max + (tau_min - tau_max) * step / (total_steps - 1)
    Clamped to [tau_min, tau_max] outside the stage.
    """
    frac = min(max(step, 0) / max(total_steps - 1, 1), 1.0)
    if kind == "exp":
        return tau_max * math.exp(frac * math.log(tau_min / tau_max))
    if kind == "linear":
        return tau_max + (tau_min - tau_max) * frac
    raise ValueError(f"unknown temperature schedule kind {kind!r}")
