"""Route analysis: which attention mode and which input each layer chose, over many samples (paper Fig. 4).

Dimension legend
    B batch size, L layers, M attention modes of a layer, C Switch-Input candidates of a layer
    (``out_mid_in``: 3 at every layer; ``last3``: min(3, l) at 1-based layer l, so C varies by layer)

A *route* is one sample's path through the encoder: per layer the chosen mode and, from layer 2 on with
SIB, the chosen input of each modality. An *architecture* is a whole route; the paper reports the most
frequent ones and their share (``switchbert.paper.TOP_ROUTE_SHARE``: RefCOCO+ and Flickr30k).

    collector = RouteCollector(model.config)
    for batch in batches:
        collector.update_output(model(batch))   # eval mode: hard routes
    stats = collector.stats()                   # RouteStats: to_dict(), to_markdown()

``collect_routes`` does exactly that under ``torch.no_grad`` in eval mode. ``route_probability_log`` turns
one training batch's routes into the scalars a trainer logs (``routes/sab/L{i}/{mode}``, ...).

How sure a switcher is (``SwitcherConfidence``): beside the hard choice, each layer keeps the mean over
samples of the top probability, of the entropy of p, and of the *margin* p(top 1) - p(top 2). A
switcher whose mean margin is below ``NEAR_TIE_MARGIN`` (0.1) is a *near-tie*: its argmax is decided by
small differences between almost equal probabilities (a freshly initialised switcher gives ~0 margin),
so its route share says little about what the model learnt, and the reports say so in words. The
margin is per sample, so a switcher that confidently sends different samples to different modes is
not a tie even when its *mean* probabilities are even.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from switchbert.batch import Batch
from switchbert.config import ModelConfig
from switchbert.outputs import EncoderOutput, LayerRoute

from switchbert.analysis.flops import FlopsAccumulator, FlopsTally

MODALITIES: tuple[str, ...] = ("text", "region")
"""Index 0 and 1 of ``LayerRoute.sib_*``'s second dimension, as they appear in log keys."""

NEAR_TIE_MARGIN = 0.1
"""A switcher is a near-tie when the mean over samples of p(top 1) - p(top 2) is below this."""


@dataclass(frozen=True)
class SwitcherConfidence:
    """How decided one switcher (a layer's SAB, or one modality of its SIB) was, over the samples.

    Attributes:
        options: K, the modes or candidates it chooses among.
        mean_top_prob: mean over samples of max_k p_k (1/K = undecided, 1 = certain).
        mean_entropy: mean over samples of -sum_k p_k ln p_k, in nats (ln K = uniform, 0 = certain).
        mean_margin: mean over samples of p(top 1) - p(top 2).
    """

    options: int
    mean_top_prob: float
    mean_entropy: float
    mean_margin: float

    @property
    def max_entropy(self) -> float:
        return math.log(self.options) if self.options > 1 else 0.0

    @property
    def near_tie(self) -> bool:
        """True when the choice is an argmax over near-equal probabilities (``NEAR_TIE_MARGIN``)."""
        return self.options > 1 and self.mean_margin < NEAR_TIE_MARGIN

    def to_dict(self) -> dict[str, Any]:
        return {"options": self.options, "mean_top_prob": self.mean_top_prob, "mean_entropy": self.mean_entropy,
                "mean_margin": self.mean_margin, "near_tie": self.near_tie}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SwitcherConfidence":
        return cls(int(d["options"]), float(d["mean_top_prob"]), float(d["mean_entropy"]), float(d["mean_margin"]))


def confidence_sums(probs: Tensor) -> Tensor:
    """Per-sample (top prob, entropy, margin) of probabilities (b, ..., K), summed over samples: (..., 3)."""
    p = probs.double()
    top2 = p.topk(min(2, p.shape[-1]), dim=-1).values
    margin = top2[..., 0] - top2[..., 1] if p.shape[-1] > 1 else torch.ones_like(top2[..., 0])
    entropy = -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(-1)
    return torch.stack([top2[..., 0], entropy, margin], dim=-1).sum(dim=0)


# -- one training batch -> logged scalars ------------------------------------------------------------------


def route_probability_log(output: Union[EncoderOutput, Sequence[LayerRoute]]) -> dict[str, float]:
    """Mean switcher probabilities of one batch, keyed for a metrics log.

    Keys (layers 1-based): ``routes/sab/L{i}/{mode}`` the mean over samples of p(mode) at layer i;
    ``routes/sib/L{i}/{text|region}/{candidate}`` the mean p(candidate) of each modality's input to
    layer i. These are the probabilities p before Gumbel noise (``LayerRoute.sab_probs``), i.e. what the
    switcher has learnt, not the noisy mixture. Layers with a single mode log no SAB key; a fixed
    architecture gives ``{}``. The trainer logs these every ``log_every`` steps.

    Args:
        output: a model output, or its ``routes``.
    """
    routes = output.routes if isinstance(output, EncoderOutput) else output
    log: dict[str, float] = {}
    for i, r in enumerate(routes, start=1):
        if len(r.modes) > 1:  # a fixed mode (SIB-only models) has probability 1: nothing to log
            mean = r.sab_probs.detach().float().mean(dim=0).tolist()  # (M,)
            for mode, p in zip(r.modes, mean):
                log[f"routes/sab/L{i}/{mode}"] = float(p)
        if r.sib_probs is not None:
            sib = r.sib_probs.detach().float().mean(dim=0).tolist()  # (2, C)
            for modality, row in zip(MODALITIES, sib):
                for cand, p in zip(r.sib_candidates, row):
                    log[f"routes/sib/L{i}/{modality}/{cand}"] = float(p)
    return log


# -- the statistics ------------------------------------------------------------------------------------------


@dataclass
class LayerRouteStats:
    """What one layer chose over all samples.

    Attributes:
        layer: 1-based layer number.
        modes: the layer's attention modes.
        mode_counts: samples that chose each mode (argmax of the applied weights).
        mode_mean_probs: mean switcher probability of each mode.
        sib_candidates: the Switch-Input candidates before this layer (empty: no SIB here).
        sib_counts: {"text": counts per candidate, "region": ...}; empty without SIB.
        sib_mean_probs: {"text": mean probability per candidate, "region": ...}; empty without SIB.
        mode_confidence: how decided the SAB switcher was (None: a fixed mode, or statistics written
            before confidence was recorded).
        sib_confidence: {"text": ..., "region": ...} the same for each modality's SIB choice.
    """

    layer: int
    modes: tuple[str, ...]
    mode_counts: tuple[int, ...]
    mode_mean_probs: tuple[float, ...]
    sib_candidates: tuple[str, ...] = ()
    sib_counts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    sib_mean_probs: dict[str, tuple[float, ...]] = field(default_factory=dict)
    mode_confidence: Optional[SwitcherConfidence] = None
    sib_confidence: dict[str, SwitcherConfidence] = field(default_factory=dict)

    def switchers(self) -> list[tuple[str, SwitcherConfidence]]:
        """("SAB" / "SIB text" / "SIB region", confidence) of every switcher of this layer with a record."""
        out = [("SAB", self.mode_confidence)] if self.mode_confidence is not None and len(self.modes) > 1 else []
        out += [(f"SIB {m}", self.sib_confidence[m]) for m in MODALITIES if m in self.sib_confidence]
        return out

    @property
    def num_samples(self) -> int:
        return sum(self.mode_counts)

    def mode_frequencies(self) -> dict[str, float]:
        """Share of samples that chose each mode."""
        n = max(self.num_samples, 1)
        return {m: c / n for m, c in zip(self.modes, self.mode_counts)}

    def sib_frequencies(self, modality: str) -> dict[str, float]:
        """Share of samples whose ``modality`` ("text" or "region") input was each candidate."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        counts = self.sib_counts.get(modality, ())
        n = max(sum(counts), 1)
        return {c: k / n for c, k in zip(self.sib_candidates, counts)}

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "layer": self.layer,
            "modes": list(self.modes),
            "mode_counts": list(self.mode_counts),
            "mode_frequencies": self.mode_frequencies(),
            "mode_mean_probs": list(self.mode_mean_probs),
        }
        if self.sib_candidates:
            d["sib_candidates"] = list(self.sib_candidates)
            d["sib_counts"] = {k: list(v) for k, v in self.sib_counts.items()}
            d["sib_frequencies"] = {m: self.sib_frequencies(m) for m in MODALITIES}
            d["sib_mean_probs"] = {k: list(v) for k, v in self.sib_mean_probs.items()}
        if self.mode_confidence is not None:
            d["mode_confidence"] = self.mode_confidence.to_dict()
        if self.sib_confidence:
            d["sib_confidence"] = {k: v.to_dict() for k, v in self.sib_confidence.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerRouteStats":
        return cls(
            layer=int(d["layer"]),
            modes=tuple(d["modes"]),
            mode_counts=tuple(int(c) for c in d["mode_counts"]),
            mode_mean_probs=tuple(float(p) for p in d["mode_mean_probs"]),
            sib_candidates=tuple(d.get("sib_candidates", ())),
            sib_counts={k: tuple(int(c) for c in v) for k, v in d.get("sib_counts", {}).items()},
            sib_mean_probs={k: tuple(float(p) for p in v) for k, v in d.get("sib_mean_probs", {}).items()},
            mode_confidence=(SwitcherConfidence.from_dict(d["mode_confidence"]) if d.get("mode_confidence")
                             else None),
            sib_confidence={k: SwitcherConfidence.from_dict(v) for k, v in d.get("sib_confidence", {}).items()},
        )


@dataclass(frozen=True)
class LayerChoice:
    """One layer of one route: the mode, and the (text, region) inputs chosen by the SIB before it."""

    mode: str
    text_input: Optional[str] = None
    region_input: Optional[str] = None

    def signature(self, layer: int) -> str:
        """``L3:SC[t<-out,r<-mid]``, the format of ``EncoderOutput.route_strings``."""
        if self.text_input is None:
            return f"L{layer}:{self.mode}"
        return f"L{layer}:{self.mode}[t<-{self.text_input},r<-{self.region_input}]"


@dataclass(frozen=True)
class Architecture:
    """A whole route (one choice per layer, bottom to top) and how many samples took it.

    Attributes:
        layers: the choice at layers 1..L.
        count: samples that took exactly this route.
        share: count / all samples.
    """

    layers: tuple[LayerChoice, ...]
    count: int
    share: float

    @property
    def signature(self) -> str:
        return " ".join(c.signature(i) for i, c in enumerate(self.layers, start=1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "count": self.count,
            "share": self.share,
            "layers": [{"mode": c.mode, "text_input": c.text_input, "region_input": c.region_input}
                       for c in self.layers],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Architecture":
        layers = tuple(LayerChoice(c["mode"], c.get("text_input"), c.get("region_input")) for c in d["layers"])
        return cls(layers, int(d["count"]), float(d["share"]))


@dataclass
class RouteStats:
    """Route statistics of one model on one set of samples.

    Attributes:
        model: the model's name (``config.name``).
        num_samples: samples counted.
        layers: per-layer statistics, layer 1 first.
        top_architectures: the most frequent whole routes, most frequent first.
        num_architectures: distinct routes seen.
        flops: FLOPs along the routes and the samples' token counts (None when collected without a config).
        task: what the samples are (e.g. "refexp"), for reports.
    """

    model: str
    num_samples: int
    layers: tuple[LayerRouteStats, ...]
    top_architectures: tuple[Architecture, ...]
    num_architectures: int
    flops: Optional[FlopsTally] = None
    task: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``from_dict`` reads it back)."""
        return {
            "format": "switchbert-routes/1",
            "model": self.model,
            "task": self.task,
            "num_samples": self.num_samples,
            "num_architectures": self.num_architectures,
            "layers": [layer.to_dict() for layer in self.layers],
            "top_architectures": [a.to_dict() for a in self.top_architectures],
            "flops": None if self.flops is None else self.flops.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RouteStats":
        if d.get("format") != "switchbert-routes/1":
            raise ValueError(f"not a switchbert route-statistics dict (format {d.get('format')!r})")
        return cls(
            model=d["model"],
            num_samples=int(d["num_samples"]),
            layers=tuple(LayerRouteStats.from_dict(x) for x in d["layers"]),
            top_architectures=tuple(Architecture.from_dict(a) for a in d["top_architectures"]),
            num_architectures=int(d["num_architectures"]),
            flops=None if d.get("flops") is None else FlopsTally.from_dict(d["flops"]),
            task=d.get("task", ""),
        )

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load_json(cls, path: str | Path) -> "RouteStats":
        return cls.from_dict(json.loads(Path(path).read_text()))

    @property
    def has_sib(self) -> bool:
        return any(layer.sib_candidates for layer in self.layers)

    def switcher_confidence(self) -> list[tuple[int, str, SwitcherConfidence]]:
        """(layer, "SAB" / "SIB text" / "SIB region", confidence) of every switcher with a record."""
        return [(layer.layer, name, c) for layer in self.layers for name, c in layer.switchers()]

    def near_ties(self) -> list[tuple[int, str, SwitcherConfidence]]:
        """The switchers whose choice is a near-tie (``NEAR_TIE_MARGIN``)."""
        return [x for x in self.switcher_confidence() if x[2].near_tie]

    def confidence_note(self) -> str:
        """One or two sentences on how decided the switchers are; empty without a confidence record."""
        switchers = self.switcher_confidence()
        if not switchers:
            return ""
        ties = self.near_ties()
        margin = f"mean margin between the two most probable options below {NEAR_TIE_MARGIN:g}"
        if len(ties) == len(switchers):
            return (f"**Undecided: all {len(switchers)} switchers are near-ties** ({margin}). Every hard choice "
                    "here is an argmax over almost equal probabilities, so the route shares and the "
                    "architectures reported for these samples do not show a preference the model learnt; they "
                    "are ties broken by small differences.")
        if ties:
            where = ", ".join(f"L{layer} {name}" for layer, name, _ in ties)
            return (f"**{len(ties)} of {len(switchers)} switchers are near-ties** ({margin}): {where}. Their "
                    "choices are argmaxes over almost equal probabilities; read those layers' shares, and the "
                    "architectures built from them, as undecided, not as findings.")
        what = "The switcher is" if len(switchers) == 1 else f"All {len(switchers)} switchers are"
        return f"{what} decided ({margin.replace('below', 'at least')})."

    def confidence_markdown(self, heading_level: int = 3) -> str:
        """Per layer and switcher: mean top probability, entropy (of ln K), margin, near-tie mark."""
        switchers = self.switcher_confidence()
        if not switchers:
            return ""
        h = "#" * heading_level
        out = [f"{h} How sure the switchers are", "",
               f"Mean over samples of p(top), the entropy of p (nats; ln K is uniform) and the margin "
               f"p(top 1) - p(top 2); a near-tie has a mean margin below {NEAR_TIE_MARGIN:g}.", "",
               "| layer | switcher | options | mean top p | entropy (max) | margin | choice |",
               "|---|---|---:|---:|---:|---:|---|"]
        for layer, name, c in switchers:
            out.append(f"| L{layer} | {name} | {c.options} | {c.mean_top_prob:.3f} | {c.mean_entropy:.3f} "
                       f"({c.max_entropy:.3f}) | {c.mean_margin:.3f} | {'**near-tie**' if c.near_tie else 'decided'} |")
        out.append("")
        return "\n".join(out)

    def summary_markdown(self) -> str:
        """A short paragraph for a report (the demo's routes section): how many routes, the most frequent
        one, and, in words, whether the switchers behind it were decided, with the confidence table."""
        top = self.top_architectures[0] if self.top_architectures else None
        if top is None:
            return "no samples\n"
        if not self.layers:
            return f"{self.num_samples:,} samples; a fixed architecture: every sample takes the same route.\n"
        lines = [f"{self.num_samples:,} held-out samples took {self.num_architectures:,} distinct "
                 f"route{'s' if self.num_architectures != 1 else ''}; the most frequent one takes "
                 f"{top.share:.1%} of them:", "", f"`{top.signature}`", ""]
        note = self.confidence_note()
        if note:
            lines += [note, "", self.confidence_markdown(heading_level=4)]
        return "\n".join(lines)

    def to_markdown(self, heading_level: int = 2) -> str:
        """Tables of switcher confidence, mode frequencies, SIB choices and the top architectures."""
        h = "#" * heading_level
        title = f"{self.model}" + (f" on {self.task}" if self.task else "")
        out = [f"{h} Routes: {title}", "",
               f"{self.num_samples:,} samples, {self.num_architectures:,} distinct architectures.", ""]
        if not self.layers:
            return "\n".join(out + ["A fixed architecture: every sample takes the same route.", ""])
        note = self.confidence_note()
        if note:
            out += [note, "", self.confidence_markdown(heading_level + 1)]
        modes = list(dict.fromkeys(m for layer in self.layers for m in layer.modes))
        out += [f"{h}# Attention mode per layer (share of samples; mean switcher probability)", "",
                "| layer | " + " | ".join(modes) + " |", "|---|" + "---:|" * len(modes)]
        for layer in self.layers:
            freq, probs = layer.mode_frequencies(), dict(zip(layer.modes, layer.mode_mean_probs))
            cells = [f"{freq[m]:.1%} ({probs[m]:.2f})" if m in freq else "-" for m in modes]
            tie = " (near-tie)" if layer.mode_confidence is not None and layer.mode_confidence.near_tie else ""
            out.append(f"| L{layer.layer}{tie} | " + " | ".join(cells) + " |")
        out.append("")
        if self.has_sib:
            cands = list(dict.fromkeys(c for layer in self.layers for c in layer.sib_candidates))
            out += [f"{h}# Switch-Input choice per layer (share of samples)", "",
                    "| layer | " + " | ".join(f"text<-{c}" for c in cands) + " | "
                    + " | ".join(f"region<-{c}" for c in cands) + " |",
                    "|---|" + "---:|" * (2 * len(cands))]
            for layer in self.layers:
                if not layer.sib_candidates:
                    continue
                cells = []
                for modality in MODALITIES:
                    f = layer.sib_frequencies(modality)
                    cells += [f"{f[c]:.1%}" if c in f else "-" for c in cands]
                ties = [m for m, c in layer.sib_confidence.items() if c.near_tie]
                tie = f" (near-tie: {', '.join(ties)})" if ties else ""
                out.append(f"| L{layer.layer}{tie} | " + " | ".join(cells) + " |")
            out.append("")
        undecided = self.switcher_confidence() and len(self.near_ties()) == len(self.switcher_confidence())
        caveat = " (every switcher a near-tie: ties broken arbitrarily, not a finding)" if undecided else ""
        out += [f"{h}# Most frequent architectures{caveat}", "", "| rank | share | samples | route (layer 1 first) |",
                "|---:|---:|---:|---|"]
        for k, a in enumerate(self.top_architectures, start=1):
            out.append(f"| {k} | {a.share:.2%} | {a.count:,} | `{a.signature}` |")
        out.append("")
        return "\n".join(out)


# -- accumulation --------------------------------------------------------------------------------------------


class RouteCollector:
    """Accumulates routes over batches into ``RouteStats``.

    Args:
        config: the model's config; with it the collector also sums FLOPs along the routes
            (``analysis.flops``). Without it, ``RouteStats.flops`` is None.
        top_n: architectures kept in ``stats()`` by default.
    """

    def __init__(self, config: Optional[ModelConfig] = None, top_n: int = 10) -> None:
        self.config = config
        self.top_n = top_n
        self.num_samples = 0
        self._layout: Optional[list[tuple[tuple[str, ...], tuple[str, ...]]]] = None  # per layer (modes, cands)
        self._mode_counts: list[Tensor] = []  # (M,) int64 per layer
        self._mode_prob_sums: list[Tensor] = []  # (M,) float64
        self._sib_counts: list[Optional[Tensor]] = []  # (2, C) int64 or None
        self._sib_prob_sums: list[Optional[Tensor]] = []  # (2, C) float64 or None
        self._mode_conf_sums: list[Tensor] = []  # (3,) float64: top prob, entropy, margin summed over samples
        self._sib_conf_sums: list[Optional[Tensor]] = []  # (2, 3) float64 or None
        self._architectures: Counter = Counter()  # route key (tuple of ints) -> samples
        self._flops = FlopsAccumulator(config) if config is not None else None

    def update_output(self, output: EncoderOutput, sample_mask: Optional[Tensor] = None) -> None:
        """Adds a model output's routes (masks taken from the output)."""
        self.update(output.routes, output.text_mask, output.region_mask, sample_mask)

    def update(
        self,
        routes: Sequence[LayerRoute],
        text_mask: Optional[Tensor] = None,
        region_mask: Optional[Tensor] = None,
        sample_mask: Optional[Tensor] = None,
    ) -> None:
        """Adds one batch.

        Args:
            routes: ``EncoderOutput.routes`` of the batch; an empty tuple (fixed architecture) counts
                samples only (needs ``text_mask``).
            text_mask: (B, T) bool; needed for FLOPs (and to know B when routes are empty).
            region_mask: (B, R) bool, IMG included (``EncoderOutput.region_mask``); needed for FLOPs.
            sample_mask: (B,) bool, True = a real sample. Padding samples (a batch filled up to a fixed
                size, a distributed sampler's repeats) are left out of every count.
        """
        if routes:
            B = routes[0].sab_choice.shape[0]
        elif text_mask is not None:
            B = text_mask.shape[0]
        else:
            raise ValueError("RouteCollector.update: no routes and no text_mask: cannot tell the batch size")
        keep = torch.ones(B, dtype=torch.bool) if sample_mask is None else sample_mask.detach().cpu().bool()
        if keep.shape != (B,):
            raise ValueError(f"sample_mask must have shape ({B},), got {tuple(keep.shape)}")
        if self._flops is not None:
            if text_mask is None or region_mask is None:
                raise ValueError("RouteCollector with a config counts FLOPs: pass text_mask and region_mask")
            self._flops.update(routes, text_mask, region_mask, keep)
        self._check_layout(routes)
        self.num_samples += int(keep.sum())
        if not routes or not bool(keep.any()):
            return
        key_columns = []
        for i, r in enumerate(routes):
            choice = r.sab_choice.detach().cpu()[keep]  # (b,)
            M = len(r.modes)
            self._mode_counts[i] += torch.bincount(choice, minlength=M)[:M]
            sab_p = r.sab_probs.detach().cpu().double()[keep]  # (b, M)
            self._mode_prob_sums[i] += sab_p.sum(dim=0)
            self._mode_conf_sums[i] += confidence_sums(sab_p)
            key_columns.append(choice)
            if r.sib_choice is not None:
                sib_choice = r.sib_choice.detach().cpu()[keep]  # (b, 2)
                C = len(r.sib_candidates)
                for g in range(2):
                    self._sib_counts[i][g] += torch.bincount(sib_choice[:, g], minlength=C)[:C]
                sib_p = r.sib_probs.detach().cpu().double()[keep]  # (b, 2, C)
                self._sib_prob_sums[i] += sib_p.sum(dim=0)
                self._sib_conf_sums[i] += confidence_sums(sib_p)
                key_columns += [sib_choice[:, 0], sib_choice[:, 1]]
        # One row per sample: its whole route as integers; count distinct rows in one pass.
        keys = torch.stack(key_columns, dim=1)  # (b, L + 2 * #SIB)
        rows, counts = torch.unique(keys, dim=0, return_counts=True)
        self._architectures.update(dict(zip(map(tuple, rows.tolist()), counts.tolist())))

    def _check_layout(self, routes: Sequence[LayerRoute]) -> None:
        layout = [(tuple(r.modes), tuple(r.sib_candidates) if r.sib_choice is not None else ()) for r in routes]
        if self._layout is None:
            self._layout = layout
            for modes, cands in layout:
                self._mode_counts.append(torch.zeros(len(modes), dtype=torch.int64))
                self._mode_prob_sums.append(torch.zeros(len(modes), dtype=torch.float64))
                self._sib_counts.append(torch.zeros(2, len(cands), dtype=torch.int64) if cands else None)
                self._sib_prob_sums.append(torch.zeros(2, len(cands), dtype=torch.float64) if cands else None)
                self._mode_conf_sums.append(torch.zeros(3, dtype=torch.float64))
                self._sib_conf_sums.append(torch.zeros(2, 3, dtype=torch.float64) if cands else None)
        elif layout != self._layout:
            raise ValueError("RouteCollector: this batch's routes have a different layout (layers, modes or SIB "
                             "candidates) from earlier batches; use one collector per model")

    def _decode(self, key: tuple[int, ...]) -> tuple[LayerChoice, ...]:
        assert self._layout is not None
        out, j = [], 0
        for modes, cands in self._layout:
            mode = modes[key[j]]
            j += 1
            if cands:
                out.append(LayerChoice(mode, cands[key[j]], cands[key[j + 1]]))
                j += 2
            else:
                out.append(LayerChoice(mode))
        return tuple(out)

    def stats(self, top_n: Optional[int] = None, task: str = "") -> RouteStats:
        """The statistics so far; ``top_n`` architectures (default the collector's)."""
        top_n = self.top_n if top_n is None else top_n
        n = self.num_samples
        layers = []
        for i, (modes, cands) in enumerate(self._layout or []):
            denom = max(n, 1)
            layer = LayerRouteStats(
                layer=i + 1,
                modes=modes,
                mode_counts=tuple(self._mode_counts[i].tolist()),
                mode_mean_probs=tuple((self._mode_prob_sums[i] / denom).tolist()),
                sib_candidates=cands,
            )
            if n and len(modes) > 1:
                layer.mode_confidence = SwitcherConfidence(len(modes), *(self._mode_conf_sums[i] / n).tolist())
            if cands:
                counts, sums = self._sib_counts[i], self._sib_prob_sums[i]
                layer.sib_counts = {m: tuple(counts[g].tolist()) for g, m in enumerate(MODALITIES)}
                layer.sib_mean_probs = {m: tuple((sums[g] / denom).tolist()) for g, m in enumerate(MODALITIES)}
                if n:
                    conf = self._sib_conf_sums[i] / n  # (2, 3)
                    layer.sib_confidence = {m: SwitcherConfidence(len(cands), *conf[g].tolist())
                                            for g, m in enumerate(MODALITIES)}
            layers.append(layer)
        # Ties broken by the route itself, so the order is reproducible.
        ranked = sorted(self._architectures.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]
        top = tuple(Architecture(self._decode(k), c, c / max(n, 1)) for k, c in ranked)
        if self._layout == [] and n:
            top = (Architecture((), n, 1.0),)  # a fixed architecture: one route
        name = self.config.name if self.config is not None else ""
        return RouteStats(
            model=name,
            num_samples=n,
            layers=tuple(layers),
            top_architectures=top,
            num_architectures=len(self._architectures) if self._layout else int(n > 0),
            flops=None if self._flops is None else self._flops.tally(),
            task=task,
        )


def collect_routes(
    model: torch.nn.Module,
    batches: Iterable[Union[Batch, tuple]],
    device: Union[str, torch.device] = "cpu",
    top_n: int = 10,
    max_samples: Optional[int] = None,
    task: str = "",
) -> RouteStats:
    """Runs ``model`` in eval mode (hard routes) without gradients over ``batches`` and collects routes.

    Args:
        model: a library model (``model.config`` is used for FLOPs).
        batches: ``Batch`` objects, or ``(Batch, labels)`` pairs as the data loaders yield (labels ignored).
        device: where to run.
        top_n: architectures to keep.
        max_samples: stop after this many samples (the last batch is cut).
        task: a label stored in the statistics.

    Returns:
        ``RouteStats`` over every sample seen. The model's train/eval mode is restored afterwards.
    """
    config = getattr(model, "config", None)
    collector = RouteCollector(config, top_n)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for item in batches:
                batch = item[0] if isinstance(item, (tuple, list)) else item
                if max_samples is not None:
                    left = max_samples - collector.num_samples
                    if left <= 0:
                        break
                    if batch.batch_size > left:
                        batch = batch.select(torch.arange(left))
                out = model(batch.to(device))
                collector.update_output(out)
    finally:
        model.train(was_training)
    return collector.stats(task=task)
