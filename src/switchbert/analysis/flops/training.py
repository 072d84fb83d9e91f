"""FLOPs along a training run: what the trainer logs on a log step, and the run's totals from that log.

The trainer imports ``training_flops_log_for_batch``; ``switchbert flops --metrics`` reads the log back
with ``flops_from_training_log``. Counted along the training routes (soft, top-K or straight-through),
as paper Table 7 counts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from switchbert.analysis.flops.baselines import default_baselines, histogram_flops
from switchbert.analysis.flops.count import NOTIONS, check_notion
from switchbert.analysis.flops.report import format_flops
from switchbert.analysis.flops.tally import ACTIVE_WEIGHT_THRESHOLD, FlopsAccumulator, active_path_counts
from switchbert.config import ModelConfig
from switchbert.outputs import LayerRoute

FLOPS_LOG_PREFIX = "flops/"
"""Keys of ``training_flops_log``: ``flops/paper``, ``flops/fused``, ``flops/uniter`` (forward FLOPs per
sample of the logged batch), ``flops/active_threshold``, ``flops/active_sab`` (mean active modes per
layer and sample) and ``flops/active_sab/L{i}``, ``flops/active_sib/L{i}`` (per layer)."""


def training_flops_log(
    config: ModelConfig,
    routes: Sequence[LayerRoute],
    text_mask: Tensor,
    region_mask: Tensor,
    min_weight: float = ACTIVE_WEIGHT_THRESHOLD,
) -> dict[str, float]:
    """What a trainer logs about compute on a log step: FLOPs along this batch's training routes (paper
    Table 7 counts these, accumulated over the run) and how many paths were active.

    Args:
        config: the model's config.
        routes: the training forward's ``EncoderOutput.routes`` (soft, top-K or straight-through).
        text_mask: (B, T) bool, real text tokens.
        region_mask: (B, R) bool, real region tokens with IMG (``EncoderOutput.region_mask``; from a
            ``Batch``, whose mask has no IMG column, use ``training_flops_log_for_batch``).
        min_weight: the active-path threshold (``ACTIVE_WEIGHT_THRESHOLD``).

    Returns:
        ``flops/*`` keys (see ``FLOPS_LOG_PREFIX``); ``{}`` for a model without switches.
    """
    if not routes:
        return {}
    acc = FlopsAccumulator(config, min_weight)
    acc.update(routes, text_mask, region_mask)
    tally = acc.tally()
    uniter = default_baselines(config)["UNITER"]
    log: dict[str, float] = {
        "flops/paper": tally.mean("paper"),
        "flops/fused": tally.mean("fused"),
        "flops/uniter": float(histogram_flops(uniter, tally.token_counts).total) / max(tally.num_samples, 1),
        "flops/active_threshold": float(min_weight),
    }
    sab, sib = active_path_counts(routes, min_weight)
    log["flops/active_sab"] = sum(sab) / len(sab)
    for i, (a, b) in enumerate(zip(sab, sib), start=1):
        log[f"flops/active_sab/L{i}"] = a
        if b is not None:
            log[f"flops/active_sib/L{i}"] = b
    return log


def training_flops_log_for_batch(config: ModelConfig, routes: Sequence[LayerRoute], batch: Any,
                                 min_weight: float = ACTIVE_WEIGHT_THRESHOLD) -> dict[str, float]:
    """``training_flops_log`` from a ``Batch`` (its region mask has no IMG column: one is added)."""
    if not routes:
        return {}
    img = torch.ones_like(batch.region_mask[:, :1])
    return training_flops_log(config, routes, batch.text_mask, torch.cat([img, batch.region_mask], dim=1),
                              min_weight)


@dataclass
class TrainingFlops:
    """Forward FLOPs over a training run, integrated from the values logged on log steps.

    A value logged at step s stands for every step from s to the step before the next log (the
    trainer logs step 1 and every ``train.log_every`` steps), the last one up to ``total_steps``: a
    sample of the run, exact when routes change only at log steps, as in the tests.

    Attributes:
        steps: optimizer steps covered.
        global_batch: samples per step.
        active_threshold: the threshold the run counted active paths with.
        series: (step, paper, fused, uniter, active_sab) per log record: per-sample forward FLOPs and
            mean active modes per layer.
        totals: {"paper", "fused", "uniter"}: summed forward FLOPs over the run (x ``passes`` for
            forward + backward in ``to_markdown``).
    """

    steps: int
    global_batch: int
    active_threshold: float
    series: list[tuple[int, float, float, float, float]]
    totals: dict[str, float]

    def relative(self, notion: str) -> float:
        """The run's FLOPs under ``notion`` over UNITER's on the same samples."""
        return self.totals[check_notion(notion)] / self.totals["uniter"] if self.totals["uniter"] else float("nan")

    def to_markdown(self, passes: float = 3.0) -> str:
        first, last = self.series[0], self.series[-1]
        lines = [
            f"Training FLOPs over {self.steps:,} steps x {self.global_batch} samples (forward x {passes:g}), "
            f"counted along the training routes on log steps; a path is active when its weight is above "
            f"{self.active_threshold:g}.",
            "",
            "| model | notion | total FLOPs | vs UNITER |",
            "|---|---|---:|---:|",
        ]
        for notion in NOTIONS:
            lines.append(f"| switching model | {notion} | {format_flops(self.totals[notion] * passes)} | "
                         f"{self.relative(notion):.3f}x |")
        lines += [f"| UNITER | fixed | {format_flops(self.totals['uniter'] * passes)} | 1.000x |", "",
                  f"Active attention modes per layer: {first[4]:.2f} at step {first[0]}, {last[4]:.2f} at step "
                  f"{last[0]}; paper-notion FLOPs per sample {format_flops(first[1])} -> {format_flops(last[1])}."]
        return "\n".join(lines)


def flops_from_training_log(records: Sequence[Mapping[str, Any]], global_batch: int,
                            total_steps: Optional[int] = None) -> TrainingFlops:
    """Integrates the ``flops/*`` values of a metrics log (``train`` records) over the run.

    Args:
        records: metrics records (``MetricsLog`` JSON lines); records without ``flops/paper`` are skipped.
        global_batch: ``train.batch_size`` of the run.
        total_steps: the run's last step (default: the last logged step).

    Returns:
        ``TrainingFlops``.
    """
    rows = sorted((int(r["step"]), r) for r in records
                  if "flops/paper" in r and r.get("split", "train") == "train")
    if not rows:
        raise ValueError("flops_from_training_log: no train record with flops/paper (a model without switches, "
                         "or a log written before FLOPs were logged)")
    last = rows[-1][0] if total_steps is None else int(total_steps)
    if last < rows[-1][0]:
        raise ValueError(f"flops_from_training_log: total_steps={last} is before the last logged step {rows[-1][0]}")
    totals = {"paper": 0.0, "fused": 0.0, "uniter": 0.0}
    series = []
    for k, (step, r) in enumerate(rows):
        end = rows[k + 1][0] if k + 1 < len(rows) else last + 1
        covered = end - step
        for n in totals:
            totals[n] += float(r[f"flops/{n}"]) * covered * global_batch
        series.append((step, float(r["flops/paper"]), float(r["flops/fused"]), float(r["flops/uniter"]),
                       float(r.get("flops/active_sab", float("nan")))))
    return TrainingFlops(steps=last - rows[0][0] + 1, global_batch=global_batch,
                         active_threshold=float(rows[0][1].get("flops/active_threshold", float("nan"))),
                         series=series, totals=totals)


