"""Table 7: a switching model's FLOPs over a training run beside the fixed baselines, as rows and markdown."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from switchbert.analysis.flops.baselines import default_baselines, histogram_flops
from switchbert.analysis.flops.count import NOTIONS, expected_flops
from switchbert.analysis.flops.tally import FlopsTally
from switchbert.config import ModelConfig


@dataclass
class RunFlopsRow:
    """One model's row of the Table 7 comparison.

    Attributes:
        name: the model (and notion, for the switching model).
        notion: "paper", "fused" or "fixed".
        per_sample: mean forward FLOPs per sample.
        total: per_sample x samples x epochs x passes.
        relative: total / the reference model's total.
    """

    name: str
    notion: str
    per_sample: float
    total: float
    relative: float


@dataclass
class RunFlops:
    """FLOPs of a training run (paper Table 7) for the switching model and the fixed baselines.

    Attributes:
        samples: training samples per epoch.
        epochs: epochs.
        passes: multiplier from one forward to a training step (forward + backward ~ 3x forward).
        reference: the row name ``relative`` divides by.
        rows: the switching model (paper and fused notions) first, then the baselines.
        source: where the per-sample numbers come from (measured routes or uniform routing).
    """

    samples: int
    epochs: float
    passes: float
    reference: str
    rows: list[RunFlopsRow]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "epochs": self.epochs, "passes": self.passes, "reference": self.reference,
                "source": self.source, "rows": [vars(r).copy() for r in self.rows]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunFlops":
        return cls(d["samples"], d["epochs"], d["passes"], d["reference"], [RunFlopsRow(**r) for r in d["rows"]],
                   d.get("source", ""))

    def to_markdown(self) -> str:
        what = "Training" if self.passes != 1 else "Forward"
        passes = f" (forward x {self.passes:g} for forward + backward)" if self.passes != 1 else ""
        lines = [
            f"{what} FLOPs over {self.samples:,} samples x {self.epochs:g} epochs{passes}; "
            f"the per-sample column is one forward pass. Source: {self.source}.",
            "",
            "| model | notion | FLOPs / sample (fwd) | total FLOPs | vs " + self.reference + " |",
            "|---|---|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.notion} | {format_flops(r.per_sample)} | {format_flops(r.total)} | "
                         f"{r.relative:.3f}x |")
        lines += ["", "paper = each active attention path runs (Table 7's count); fused = our implementation "
                  "(one joint-size attention per layer whatever the mixture); fixed = no routing."]
        return "\n".join(lines)


def format_flops(x: float) -> str:
    """``13.41 G``, ``80.5 P``: three significant digits with an SI prefix."""
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.4g} {unit}"
    return f"{x:.4g}"


def flops_over_run(
    source: Any,
    config: Optional[ModelConfig] = None,
    samples: Optional[int] = None,
    epochs: float = 1.0,
    baselines: Optional[Mapping[str, ModelConfig]] = None,
    passes: float = 3.0,
) -> RunFlops:
    """Totals over a training run, Switch-BERT beside the fixed baselines (paper Table 7).

    Args:
        source: a ``RouteStats`` (its ``flops`` tally, from ``collect_routes``), a ``FlopsTally`` (e.g. a
            trainer's ``FlopsAccumulator.tally()`` over the whole run), or a ``(T, R)`` pair of token
            counts for uniform routing without data (``expected_flops``; needs ``config``).
        config: the switching model's config (required: it names the row and sets the default baselines).
        samples: training samples per epoch; None = the tally's sample count (the tally is the run).
        epochs: epochs (fractional allowed).
        baselines: name -> fixed config; default ``default_baselines(config)``.
        passes: forward -> training-step multiplier (3: forward + backward).

    Returns:
        A ``RunFlops`` whose rows give per-sample and total FLOPs, relative to the first baseline.
    """
    per, hist, n_seen, what = _switching_model_per_sample(source, config)
    if config is None:
        raise ValueError("flops_over_run needs the model config (pass config=model.config)")
    samples = n_seen if samples is None else int(samples)
    baselines = dict(default_baselines(config) if baselines is None else baselines)
    scale = samples * epochs * passes
    name = config.name
    rows = [RunFlopsRow(name, n, per[n], per[n] * scale, 0.0) for n in NOTIONS]
    for bname, bconfig in baselines.items():
        mean = float(histogram_flops(bconfig, hist).total) / sum(hist.values())
        rows.append(RunFlopsRow(bname, "fixed", mean, mean * scale, 0.0))
    reference = next(iter(baselines), rows[0].name)
    ref_total = next(r.total for r in rows if r.name == reference)
    for r in rows:
        r.relative = r.total / ref_total if ref_total else float("nan")
    return RunFlops(samples, epochs, passes, reference, rows, what)


def _switching_model_per_sample(source: Any, config: Optional[ModelConfig]
                                ) -> tuple[dict[str, float], Mapping[tuple[int, int], int], int, str]:
    """``flops_over_run``'s source read as (mean FLOPs per sample by notion,
    {(T, R): samples}, samples seen, where the numbers come from)."""
    tally = getattr(source, "flops", source)
    if isinstance(tally, tuple):
        if config is None:
            raise ValueError("flops_over_run with token counts needs the model config")
        T, R = (int(v) for v in tally)
        exp = expected_flops(config, T, R, training=True)
        return ({n: float(exp[n].total) for n in NOTIONS}, {(T, R): 1}, 1,
                f"uniform routing (as at the start of training), T={T}, R={R}")
    if isinstance(tally, FlopsTally):
        if tally.num_samples == 0:
            raise ValueError("flops_over_run: the tally has no samples")
        return {n: tally.mean(n) for n in NOTIONS}, tally.token_counts, tally.num_samples, tally.describe()
    raise ValueError(f"flops_over_run needs a RouteStats with a FLOPs tally, a FlopsTally or (T, R); got "
                     f"{type(source).__name__}{' without FLOPs (collected without a config)' if tally is None else ''}")
