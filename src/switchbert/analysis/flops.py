"""Analytic FLOPs of one sample along the route it took, and totals over a training run (paper Table 7).

Dimension legend
    T text tokens, R region tokens (IMG + regions) of ONE sample (its real tokens, no padding)
    N = T + R, D hidden size, F FFN size, Fv region feature size, P pooler size
    M attention modes of a layer, C Switch-Input candidates, A alignment width (1, 2 or 4 x D)

Convention: a matrix multiply of (a x b) by (b x c) costs 2abc FLOPs (one multiply and one add per
multiply-accumulate), as ``torch.utils.flop_counter`` counts it. Counted: every ``nn.Linear`` (embedding
projections, Q/K/V/O, FFN, switcher MLPs, poolers), the two attention products (Q K^T and P V), and
each switcher's pooling, which runs as one (2 x N) @ (N x D) product (``layers.switcher.pool_modalities``);
SIB mixing is counted apart (elementwise, cheap). Not counted: LayerNorm, softmax, GELU, dropout,
embedding look-ups (each well under 1% at BERT-base size).

Attention cost depends on which key blocks a query attends (paper Table 1): with "pairs" the number of
(query, key) pairs,
    SS: T*T + R*R    SC: T*T + R*T    CS: T*R + R*R    J: (T + R)^2
and Q K^T plus P V cost 2 * pairs * D each, i.e. 4 * pairs * D per layer.

Two notions of what a switching layer costs (both reported, never mixed):

``paper`` -- "each active path runs" (paper §3.4.5, Table 7): a layer runs one attention per *active*
    mode, each over exactly the key blocks that mode needs. A mode is active when its applied mixture
    weight exceeds ``ACTIVE_WEIGHT_THRESHOLD`` (0.01, configurable: ``min_weight`` here,
    ``train.route_active_threshold`` in training). Counting every non-zero weight would count all M modes
    all the time: a Gumbel-softmax weight is never exactly 0 (at tau = 0.1, 3.99 of 4 modes on average
    have a weight > 0), so the paper's observation -- overhead from all paths at the start, falling as
    routes settle -- could not appear. Top-K leaves exact zeros (counted out at any threshold); inference
    is one-hot (one mode). Q/K/V/O run once: the modes share them (paper §2.2).
    A Switch-Input Block that selects one candidate is free; a soft mixture of k > 1 candidates costs the
    mixing.
``fused`` -- "ours: fused" (docs/method.md §3.1, "How the modes are computed", layers/attention.py): any mixture of modes is computed
    from ONE joint-size score matrix and one P V, so every layer costs a joint attention whatever it
    chose (hard routes run a masked SDPA, also joint-size). SIB always mixes all C candidates.
The notions agree for a fixed all-J model (UNITER). For a hard route the paper notion is cheaper (a
masked-out block is skipped); for soft training with every mode active it is dearer (up to four attentions).

Fixed baselines: single-stream = every layer J; dual-stream LXMERT / ViLBERT per docs/method.md §5 and
``models/lxmert.py`` / ``models/vilbert.py`` (no routes, so one number).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from switchbert.config import MODES, ModelConfig
from switchbert.layers.switcher import ALIGNMENT_WIDTH
from switchbert.outputs import LayerRoute

Count = Union[int, Tensor]  # a FLOP count: a Python int, or a (B,) int64 tensor (one per sample)

NOTIONS: tuple[str, ...] = ("paper", "fused")
"""``paper``: each active path runs; ``fused``: our implementation (one joint-size attention)."""

BOX_DIM = 5

ACTIVE_WEIGHT_THRESHOLD = 0.01
"""A mode or SIB candidate counts as active (it runs, paper notion) when its applied weight is above this.

Below 1% of the mixture a path's contribution is negligible: an implementation that skips it changes
the layer's attention output by at most 1% of that path's output (the weights are renormalised over
the rest). Soft training starts at a high temperature with every path active and, as tau anneals and
the switchers sharpen, ends with mostly one. Top-K zeros and hard routes are unaffected by the value."""


# -- building blocks -----------------------------------------------------------------------------------


def linear_flops(tokens: Count, in_dim: int, out_dim: int) -> Count:
    """``tokens`` rows through Linear(in_dim -> out_dim): 2 * tokens * in * out."""
    return 2 * tokens * in_dim * out_dim


def attention_pairs(mode: str, T: Count, R: Count) -> Count:
    """(query, key) pairs one attention mode scores (paper Table 1)."""
    if mode == "SS":
        return T * T + R * R
    if mode == "SC":  # text -> text, regions -> text
        return T * T + R * T
    if mode == "CS":  # text -> regions, regions -> regions
        return T * R + R * R
    if mode == "J":
        return (T + R) * (T + R)
    raise ValueError(f"unknown attention mode {mode!r}; choose from {MODES}")


def ffn_flops(tokens: Count, dim: int, intermediate: int) -> Count:
    """BERT's FFN: up and down projections."""
    return linear_flops(tokens, dim, intermediate) + linear_flops(tokens, intermediate, dim)


def switcher_flops(config: ModelConfig, num_outputs: int, N: Count) -> Count:
    """One switcher on one sample of N tokens: the pooling product (2 x N) @ (N x D), then the MLP
    Linear(A -> D), GELU, Linear(D -> outputs)."""
    D = config.hidden_size
    A = ALIGNMENT_WIDTH[config.alignment] * D
    return 2 * 2 * N * D + linear_flops(1, A, D) + linear_flops(1, D, num_outputs)


def embedding_flops(config: ModelConfig, T: Count, R: Count) -> Count:
    """Region-embedding projections over the R region tokens (text embeddings are look-ups: free)."""
    Fv, e = config.region_feat_dim, config.embedding
    D = config.region_hidden_size_
    if e in ("uniter", "lxmert", "vilbert"):
        box = BOX_DIM if e == "uniter" else config.region_box_dim
        return linear_flops(R, Fv, D) + linear_flops(R, box, D)
    if e == "visualbert":
        return linear_flops(R, Fv, D)
    if e == "vlbert":
        return linear_flops(R, 8 * config.vlbert_coord_dim + Fv, D)
    raise ValueError(f"no FLOPs formula for embedding {e!r}")


def pooler_flops(config: ModelConfig) -> int:
    """The two VOLTA poolers, one token each."""
    return linear_flops(1, config.hidden_size, config.pooler_size) + linear_flops(
        1, config.region_hidden_size_, config.pooler_size)


# -- the breakdown -------------------------------------------------------------------------------------


@dataclass
class FlopsBreakdown:
    """FLOPs by part of the model. Each field is an int (one sample, or a sum) or a (B,) int64 tensor.

    Attributes:
        embeddings: region feature/box projections.
        projections: Q/K/V/O linear layers (dual-stream: every attention block's).
        attention: Q K^T and P V.
        ffn: feed-forward layers.
        switchers: SAB and SIB switcher MLPs.
        pooler: the two poolers.
        sib_mixing: elementwise mixing of Switch-Input candidates (not a matmul).
    """

    embeddings: Count = 0
    projections: Count = 0
    attention: Count = 0
    ffn: Count = 0
    switchers: Count = 0
    pooler: Count = 0
    sib_mixing: Count = 0

    @property
    def matmul(self) -> Count:
        """Everything but the elementwise SIB mixing: what ``FlopCounterMode`` sees."""
        return self.embeddings + self.projections + self.attention + self.ffn + self.switchers + self.pooler

    @property
    def total(self) -> Count:
        return self.matmul + self.sib_mixing

    def sum(self) -> "FlopsBreakdown":
        """Per-sample tensors summed to Python ints."""
        return FlopsBreakdown(**{f.name: _to_int(getattr(self, f.name)) for f in fields(self)})

    def __add__(self, other: "FlopsBreakdown") -> "FlopsBreakdown":
        return FlopsBreakdown(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def scaled(self, factor: float) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) * factor for f in fields(self)}

    def to_dict(self) -> dict[str, int]:
        d = {f.name: _to_int(getattr(self, f.name)) for f in fields(self)}
        d["total"] = sum(d.values())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FlopsBreakdown":
        return cls(**{f.name: int(d.get(f.name, 0)) for f in fields(cls)})


def _to_int(x: Count) -> int:
    return int(x.sum().item()) if isinstance(x, Tensor) else int(x)


# -- one sample (or a batch of samples) along its route ---------------------------------------------------


def single_stream_flops(
    config: ModelConfig,
    T: Count,
    R: Count,
    attention_pairs_per_layer: Sequence[Count],
    sib_mixed_per_layer: Sequence[tuple[Count, Count]] = (),
) -> FlopsBreakdown:
    """FLOPs of the single-stream encoder (Switch-BERT, UNITER & co.) given what each layer attended.

    Args:
        config: arch "switchbert".
        T, R: real text and region tokens (ints, or (B,) tensors).
        attention_pairs_per_layer: per layer, the (query, key) pairs scored (sum over the modes that ran).
        sib_mixed_per_layer: per SIB (layers 2..L), the candidates mixed for (text, regions); 0 or 1 = a
            selection, free.

    Returns:
        The breakdown (ints or (B,) tensors like T and R).
    """
    D, Fi, L = config.hidden_size, config.intermediate_size, config.num_layers
    if len(attention_pairs_per_layer) != L:
        raise ValueError(f"{config.name}: {len(attention_pairs_per_layer)} layers of attention pairs, expected {L}")
    N = T + R
    out = FlopsBreakdown(embeddings=embedding_flops(config, T, R), pooler=pooler_flops(config))
    out.projections = L * 4 * linear_flops(N, D, D)
    out.ffn = L * ffn_flops(N, D, Fi)
    att: Count = 0
    for pairs in attention_pairs_per_layer:
        att = att + 4 * pairs * D
    out.attention = att
    switch = 0
    if config.switches_attention:
        switch = switch + L * switcher_flops(config, len(config.sab_modes), N)
    if config.sib is not None:
        from switchbert.models.switchbert import sib_num_candidates

        switch = switch + sum(switcher_flops(config, 2 * sib_num_candidates(config, i), N) for i in range(1, L))
    out.switchers = switch
    mix: Count = 0
    for k_text, k_region in sib_mixed_per_layer:
        # k candidates mixed: k multiplies and k - 1 adds per element, ~2k; a selection (k <= 1) is free.
        mix = mix + _mix_cost(k_text, T, D) + _mix_cost(k_region, R, D)
    out.sib_mixing = mix
    return out


def _mix_cost(k: Count, tokens: Count, D: int) -> Count:
    if isinstance(k, Tensor):
        return torch.where(k > 1, 2 * k * tokens * D, torch.zeros_like(k))
    return 2 * k * tokens * D if k > 1 else 0


def fixed_flops(config: ModelConfig, T: Count, R: Count) -> FlopsBreakdown:
    """A fixed architecture, no routing: single-stream with its one mode, or LXMERT / ViLBERT.

    A single-stream model fixed to a mode other than J costs that mode's attention here (paper
    notion); ``route_flops`` gives its fused cost.
    """
    if config.arch == "lxmert":
        return lxmert_flops(config, T, R)
    if config.arch == "vilbert":
        return vilbert_flops(config, T, R)
    if config.switches_attention:
        raise ValueError(f"{config.name} switches among {config.sab_modes}: use route_flops or expected_flops")
    pairs = [attention_pairs(config.sab_modes[0], T, R)] * config.num_layers
    return single_stream_flops(config, T, R, pairs)


def _stream_layer(T: Count, D: int, Fi: int) -> tuple[Count, Count, Count]:
    """(projections, attention, ffn) of one self-attention + FFN layer over T tokens."""
    proj = 4 * linear_flops(T, D, D)
    return proj, 4 * T * T * D, ffn_flops(T, D, Fi)


def lxmert_flops(config: ModelConfig, T: Count, R: Count) -> FlopsBreakdown:
    """LXMERT (docs/method.md §5, models/lxmert.py): text_layers + region_layers single-modality layers, then
    cross layers of [shared cross-attention in both directions, self-attention per modality, FFN per
    modality]."""
    D, Dr, Fi, Fr = config.hidden_size, config.region_hidden_size_, config.intermediate_size, config.region_intermediate_size_
    out = FlopsBreakdown(embeddings=embedding_flops(config, T, R), pooler=pooler_flops(config))
    parts = [_stream_layer(T, D, Fi)] * config.text_layers + [_stream_layer(R, Dr, Fr)] * config.region_layers
    for _ in range(config.cross_layers):
        # Cross-attention both ways (one set of weights, run twice), then a stream layer per modality.
        parts.append((4 * linear_flops(T, D, D) + 4 * linear_flops(R, D, D), 4 * T * R * D + 4 * R * T * D, 0))
        parts += [_stream_layer(T, D, Fi), _stream_layer(R, Dr, Fr)]
    out.projections = sum(p[0] for p in parts)
    out.attention = sum(p[1] for p in parts)
    out.ffn = sum(p[2] for p in parts)
    return out


def vilbert_flops(config: ModelConfig, T: Count, R: Count) -> FlopsBreakdown:
    """ViLBERT (docs/method.md §5, models/vilbert.py): text_layers (+ region_layers) stream layers, then co-attention
    blocks of [text->regions and regions->text cross attention, FFN, self-attention, FFN] per modality."""
    D, Dr, Fi, Fr = config.hidden_size, config.region_hidden_size_, config.intermediate_size, config.region_intermediate_size_
    out = FlopsBreakdown(embeddings=embedding_flops(config, T, R), pooler=pooler_flops(config))
    parts = [_stream_layer(T, D, Fi)] * config.text_layers + [_stream_layer(R, Dr, Fr)] * config.region_layers
    for _ in range(config.cross_layers):
        # Text queries (width D) over region keys (width Dr), and the reverse; separate weights.
        cross_proj = (2 * linear_flops(T, D, D) + 2 * linear_flops(R, Dr, D)
                      + 2 * linear_flops(R, Dr, Dr) + 2 * linear_flops(T, D, Dr))
        parts.append((cross_proj, 4 * T * R * D + 4 * R * T * Dr, ffn_flops(T, D, Fi) + ffn_flops(R, Dr, Fr)))
        parts += [_stream_layer(T, D, Fi), _stream_layer(R, Dr, Fr)]
    out.projections = sum(p[0] for p in parts)
    out.attention = sum(p[1] for p in parts)
    out.ffn = sum(p[2] for p in parts)
    return out


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


def expected_flops(config: ModelConfig, T: int, R: int, training: bool = True) -> dict[str, FlopsBreakdown]:
    """Per-sample FLOPs of a switching model when routing is uniform (as it starts: switchers begin near
    uniform), without data.

    Training: each layer runs K = top_k (default all M) modes; under uniform routing every mode is among
    them with probability K / M, so the expected pairs are K / M * sum of the modes' pairs. Each SIB mixes
    min(sib_top_k, C) candidates (default all C). Inference (``training=False``): one mode, the mean over modes; SIB selects.

    Returns:
        {"paper": breakdown, "fused": breakdown} with ints (expected values rounded down).
    """
    if config.arch != "switchbert":
        fixed = fixed_flops(config, T, R)
        return {"paper": fixed, "fused": fixed}
    from switchbert.models.switchbert import sib_num_candidates

    M = len(config.sab_modes)
    K = (min(config.top_k or M, M)) if training else 1
    mode_sum = sum(attention_pairs(m, T, R) for m in config.sab_modes)
    pairs = [(K * mode_sum) // M] * config.num_layers
    mixed_paper, mixed_fused = [], []
    if config.sib is not None:
        for i in range(1, config.num_layers):
            C = sib_num_candidates(config, i)
            k = min(config.sib_top_k or C, C) if training else 1
            mixed_paper.append((k, k))
            mixed_fused.append((C, C))
    joint = attention_pairs("J", T, R)
    return {
        "paper": single_stream_flops(config, T, R, pairs, mixed_paper),
        "fused": single_stream_flops(config, T, R, [joint] * config.num_layers, mixed_fused),
    }


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
        total = getattr(self, _check_notion(notion)).total
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


def _check_notion(notion: str) -> str:
    if notion not in NOTIONS:
        raise ValueError(f"unknown FLOPs notion {notion!r}; choose from {NOTIONS}")
    return notion


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


# -- along a training run: what the trainer logs, and the totals from the log ---------------------------------

FLOPS_LOG_PREFIX = "flops/"
"""Keys of ``training_flops_log``: ``flops/paper``, ``flops/fused``, ``flops/uniter`` (forward FLOPs per
sample of the logged batch), ``flops/active_threshold``, ``flops/active_sab`` (mean active modes per
layer and sample) and ``flops/active_sab/L{i}``, ``flops/active_sib/L{i}`` (per layer)."""


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
        return self.totals[_check_notion(notion)] / self.totals["uniter"] if self.totals["uniter"] else float("nan")

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


# -- Table 7: totals over a training run beside the fixed baselines ------------------------------------------


def default_baselines(config: ModelConfig) -> dict[str, ModelConfig]:
    """The fixed architectures Table 7 compares with, at ``config``'s sizes (docs/method.md §5 layer counts).

    UNITER = this model with every layer J and no SIB; LXMERT = 9 text + 5 region + 5 cross layers;
    ViLBERT = 6 text layers + 6 co-attention blocks.
    """
    sizes = dict(hidden_size=config.hidden_size, num_heads=config.num_heads,
                 intermediate_size=config.intermediate_size, pooler_size=config.pooler_size,
                 region_feat_dim=config.region_feat_dim, vocab_size=config.vocab_size,
                 max_position=config.max_position)
    fixed = dict(sab_modes=("J",), sib=None, top_k=None, sib_top_k=None)
    return {
        "UNITER": ModelConfig(name="uniter", arch="switchbert", embedding="uniter", num_layers=config.num_layers,
                              **fixed, **sizes),
        "LXMERT": ModelConfig(name="lxmert", arch="lxmert", embedding="lxmert", text_layers=9, region_layers=5,
                              cross_layers=5, **fixed, **sizes),
        "ViLBERT": ModelConfig(name="vilbert", arch="vilbert", embedding="vilbert", text_layers=6, cross_layers=6,
                               **fixed, **sizes),
    }


def histogram_flops(config: ModelConfig, token_counts: Mapping[tuple[int, int], int]) -> FlopsBreakdown:
    """A fixed model's FLOPs summed over a token-count histogram {(T, R): samples}."""
    total = FlopsBreakdown()
    for (t, r), n in token_counts.items():
        one = fixed_flops(config, t, r)
        total = total + FlopsBreakdown(**{f.name: getattr(one, f.name) * n for f in fields(one)})
    return total


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
        config: the switching model's config; defaults to the tally's (needed for the default baselines
            and for a ``(T, R)`` source).
        samples: training samples per epoch; None = the tally's sample count (the tally is the run).
        epochs: epochs (fractional allowed).
        baselines: name -> fixed config; default ``default_baselines(config)``.
        passes: forward -> training-step multiplier (3: forward + backward).

    Returns:
        A ``RunFlops`` whose rows give per-sample and total FLOPs, relative to the first baseline.
    """
    tally = getattr(source, "flops", source)
    if isinstance(tally, tuple):
        if config is None:
            raise ValueError("flops_over_run with token counts needs the model config")
        T, R = (int(v) for v in tally)
        exp = expected_flops(config, T, R, training=True)
        per = {n: float(exp[n].total) for n in NOTIONS}
        hist = {(T, R): 1}
        n_seen = 1
        what = f"uniform routing (as at the start of training), T={T}, R={R}"
    elif isinstance(tally, FlopsTally):
        if tally.num_samples == 0:
            raise ValueError("flops_over_run: the tally has no samples")
        per = {n: tally.mean(n) for n in NOTIONS}
        hist, n_seen = tally.token_counts, tally.num_samples
        what = tally.describe()
    else:
        raise ValueError(f"flops_over_run needs a RouteStats with a FLOPs tally, a FlopsTally or (T, R); got "
                         f"{type(source).__name__}{' without FLOPs (collected without a config)' if tally is None else ''}")
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


def count_with_torch(model: torch.nn.Module, batch: Any) -> int:
    """Matmul FLOPs of one forward pass as ``torch.utils.flop_counter.FlopCounterMode`` counts them
    (a cross-check of the analytic count; gradients off)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch)
    return int(counter.get_total_flops())
