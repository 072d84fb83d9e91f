"""FLOPs along the routes samples took, summed over samples (an evaluation set, or a whole training run).

A mode or SIB candidate counts as active -- it runs, under the ``paper`` notion (``count.py``) -- when its
applied mixture weight exceeds ``ACTIVE_WEIGHT_THRESHOLD`` (``min_weight`` here,
``train.route_active_threshold`` in training). Counting every non-zero weight would count all M modes
all the time: a Gumbel-softmax weight is never exactly 0 (at tau = 0.1, 3.99 of 4 modes on average have a
weight > 0), so the paper's observation -- overhead from all paths at the start, falling as routes settle
-- could not appear. Top-K leaves exact zeros (counted out at any threshold); inference is one-hot (one
mode).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from switchbert.analysis.flops.count import (NOTIONS, Count, FlopsBreakdown, attention_pairs, check_notion,
                                             fixed_flops, single_stream_flops)
from switchbert.config import ModelConfig
from switchbert.outputs import LayerRoute

ACTIVE_WEIGHT_THRESHOLD = 0.01
"""A mode or SIB candidate counts as active (it runs, paper notion) when its applied weight is above this.

Below 1% of the mixture a path's contribution is negligible: an implementation that skips it changes
the layer's attention output by at most 1% of that path's output (the weights are renormalised over
the rest). Soft training starts at a high temperature with every path active and, as tau anneals and
the switchers sharpen, ends with mostly one. Top-K zeros and hard routes are unaffected by the value."""


# -- one batch along its routes ------------------------------------------------------------------------------


def route_flops(
    config: ModelConfig,
    routes: Sequence[LayerRoute],
    text_len: Tensor,
    region_len: Tensor,
    min_weight: float = ACTIVE_WEIGHT_THRESHOLD,
) -> dict[str, FlopsBreakdown]:
    """Per-sample FLOPs of a batch along the routes it took, under both notions.

    Args:
        config: the model's config (arch "switchbert").
        routes: ``EncoderOutput.routes`` (empty for a fixed single-stream model).
        text_len: (B,) real text tokens per sample.
        region_len: (B,) real region tokens per sample (IMG included).
        min_weight: a mode or candidate runs (paper notion) when its applied weight exceeds this
            (``ACTIVE_WEIGHT_THRESHOLD``); 0 counts every non-zero weight.

    Returns:
        {"paper": breakdown, "fused": breakdown}, each field a (B,) int64 tensor.
    """
    T = text_len.to(torch.int64).cpu()
    R = region_len.to(torch.int64).cpu()
    L = config.num_layers
    joint = attention_pairs("J", T, R)
    if not routes:
        paper = fixed_flops(config, T, R)
        fused = paper if config.arch != "switchbert" else single_stream_flops(config, T, R, [joint] * L)
        return {"paper": _per_sample(paper, T), "fused": _per_sample(fused, T)}
    if len(routes) != L:
        raise ValueError(f"{config.name} has {L} layers but the output has {len(routes)} routes")
    pairs_paper: list[Count] = []
    mixed_paper: list[tuple[Count, Count]] = []
    mixed_fused: list[tuple[Count, Count]] = []
    for r in routes:
        active = (r.sab_weights.detach().float().cpu() > min_weight)  # (B, M)
        pairs: Count = torch.zeros_like(T)
        for m, mode in enumerate(r.modes):
            pairs = pairs + active[:, m].to(torch.int64) * attention_pairs(mode, T, R)
        pairs_paper.append(pairs)
        if r.sib_weights is not None:
            k = (r.sib_weights.detach().float().cpu() > min_weight).sum(dim=-1).to(torch.int64)  # (B, 2)
            mixed_paper.append((k[:, 0], k[:, 1]))
            C = r.sib_weights.shape[-1]
            full = torch.full_like(T, C)
            mixed_fused.append((full, full))
    return {
        "paper": _per_sample(single_stream_flops(config, T, R, pairs_paper, mixed_paper), T),
        "fused": _per_sample(single_stream_flops(config, T, R, [joint] * L, mixed_fused), T),
    }


def _per_sample(b: FlopsBreakdown, like: Tensor) -> FlopsBreakdown:
    """Every field as a (B,) int64 tensor (route-independent parts, e.g. poolers, are plain ints)."""
    return FlopsBreakdown(**{f.name: torch.as_tensor(getattr(b, f.name), dtype=torch.int64).expand_as(like).clone()
                             for f in fields(b)})


# -- accumulating over samples (an evaluation set, or a whole training run) ----------------------------------


@dataclass
class FlopsTally:
    """FLOPs summed over samples along their routes, and the samples' token counts.

    Attributes:
        model: the model's name.
        num_samples: samples counted.
        paper: summed breakdown, "each active path runs".
        fused: summed breakdown, our fused implementation.
        token_counts: {(T, R): samples} histogram of real token counts, so fixed baselines can be
            counted on exactly the same inputs.
        soft_samples: samples that mixed more than one mode or input somewhere (training-time routes);
            0 for hard routes (inference).
    """

    model: str
    num_samples: int
    paper: FlopsBreakdown
    fused: FlopsBreakdown
    token_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    soft_samples: int = 0

    def describe(self) -> str:
        """Where the numbers come from, for tables."""
        if self.soft_samples:
            return (f"routes of {self.num_samples:,} samples, {self.soft_samples:,} of them soft "
                    f"(training-time mixtures)")
        return f"hard routes of {self.num_samples:,} samples (inference)"

    def mean(self, notion: str) -> float:
        """Mean FLOPs per sample under ``notion`` ("paper" or "fused")."""
        total = getattr(self, check_notion(notion)).total
        return float(total) / max(self.num_samples, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "num_samples": self.num_samples,
            "paper": self.paper.to_dict(),
            "fused": self.fused.to_dict(),
            "mean_per_sample": {n: self.mean(n) for n in NOTIONS},
            "token_counts": [[t, r, n] for (t, r), n in sorted(self.token_counts.items())],
            "soft_samples": self.soft_samples,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FlopsTally":
        return cls(
            model=d.get("model", ""),
            num_samples=int(d["num_samples"]),
            paper=FlopsBreakdown.from_dict(d["paper"]),
            fused=FlopsBreakdown.from_dict(d["fused"]),
            token_counts={(int(t), int(r)): int(n) for t, r, n in d.get("token_counts", [])},
            soft_samples=int(d.get("soft_samples", 0)),
        )


class FlopsAccumulator:
    """Sums per-sample FLOPs along routes, batch after batch.

    A trainer calls ``update`` after every forward pass to get the paper's Table 7 count (the routes of
    soft training, top-K aware); ``RouteCollector`` uses one for evaluation routes.

    Args:
        config: the model's config.
        min_weight: see ``route_flops``.
    """

    def __init__(self, config: ModelConfig, min_weight: float = ACTIVE_WEIGHT_THRESHOLD) -> None:
        self.config = config
        self.min_weight = min_weight
        self.num_samples = 0
        self.paper = FlopsBreakdown()
        self.fused = FlopsBreakdown()
        self.token_counts: Counter = Counter()
        self.soft_samples = 0

    def update(
        self,
        routes: Sequence[LayerRoute],
        text_mask: Tensor,
        region_mask: Tensor,
        sample_mask: Optional[Tensor] = None,
    ) -> None:
        """Adds one batch.

        Args:
            routes: ``EncoderOutput.routes``.
            text_mask: (B, T) bool, real text tokens.
            region_mask: (B, R) bool, real region tokens, IMG included (``EncoderOutput.region_mask``).
            sample_mask: (B,) bool, samples to count (None = all); padding samples are left out.
        """
        text_len = text_mask.sum(dim=1).cpu()
        region_len = region_mask.sum(dim=1).cpu()
        per = route_flops(self.config, routes, text_len, region_len, self.min_weight)
        keep = torch.ones(text_len.shape[0], dtype=torch.bool) if sample_mask is None else sample_mask.cpu().bool()
        soft = torch.zeros_like(keep)
        for r in routes:
            soft |= (r.sab_weights.detach().cpu() > self.min_weight).sum(dim=-1) > 1
            if r.sib_weights is not None:
                soft |= ((r.sib_weights.detach().cpu() > self.min_weight).sum(dim=-1) > 1).any(dim=-1)
        self.soft_samples += int((soft & keep).sum())
        for notion in NOTIONS:
            b = per[notion]
            b = FlopsBreakdown(**{f.name: getattr(b, f.name)[keep] for f in fields(b)})
            setattr(self, notion, getattr(self, notion) + b.sum())
        text_len, region_len = text_len[keep], region_len[keep]
        self.num_samples += int(text_len.numel())
        self.token_counts.update(zip(text_len.tolist(), region_len.tolist()))

    def tally(self) -> FlopsTally:
        return FlopsTally(self.config.name, self.num_samples, self.paper, self.fused,
                          dict(sorted(self.token_counts.items())), self.soft_samples)


def active_path_counts(routes: Sequence[LayerRoute], min_weight: float = ACTIVE_WEIGHT_THRESHOLD
                       ) -> tuple[list[float], list[Optional[float]]]:
    """Mean number of active paths per layer: weights above ``min_weight``.

    Returns:
        (sab, sib): per layer (layer 1 first), the mean over samples of the active attention modes, and
        the mean over samples and both modalities of the active SIB candidates (None where the layer has
        no SIB).
    """
    sab, sib = [], []
    for r in routes:
        sab.append(float((r.sab_weights.detach().float() > min_weight).sum(-1).double().mean()))
        sib.append(None if r.sib_weights is None else
                   float((r.sib_weights.detach().float() > min_weight).sum(-1).double().mean()))
    return sab, sib

