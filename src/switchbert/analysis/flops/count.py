"""Analytic FLOPs of one sample from a ``ModelConfig``: per layer, per attention mode, per architecture.

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
    mode, each over exactly the key blocks that mode needs (``tally.ACTIVE_WEIGHT_THRESHOLD`` says which
    modes are active). Q/K/V/O run once: the modes share them (paper §2.2). A Switch-Input Block that
    selects one candidate is free; a soft mixture of k > 1 candidates costs the mixing.
``fused`` -- "ours: fused" (docs/method.md §3.1, "How the modes are computed", layers/attention.py): any
    mixture of modes is computed from ONE joint-size score matrix and one P V, so every layer costs a joint
    attention whatever it chose (hard routes run a masked SDPA, also joint-size). SIB always mixes all C
    candidates.
The notions agree for a fixed all-J model (UNITER). For a hard route the paper notion is cheaper (a
masked-out block is skipped); for soft training with every mode active it is dearer (up to four attentions).

Fixed architectures: single-stream = every layer its one mode; dual-stream LXMERT / ViLBERT per
``models/lxmert.py`` / ``models/vilbert.py``, their layer counts read from the config (no routes, so one
number). Which configs the baselines are: ``baselines.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence, Union

import torch
from torch import Tensor

from switchbert.config import MODES, ModelConfig
from switchbert.layers.switcher import ALIGNMENT_WIDTH

Count = Union[int, Tensor]  # a FLOP count: a Python int, or a (B,) int64 tensor (one per sample)

NOTIONS: tuple[str, ...] = ("paper", "fused")
"""``paper``: each active path runs; ``fused``: our implementation (one joint-size attention)."""

BOX_DIM = 5


def check_notion(notion: str) -> str:
    """``notion`` if it is one of ``NOTIONS``; a ValueError naming them otherwise."""
    if notion not in NOTIONS:
        raise ValueError(f"unknown FLOPs notion {notion!r}; choose from {NOTIONS}")
    return notion


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
    """The two VOLTA poolers, one token each (``pooler="bert"``: one D -> D on [CLS])."""
    if config.pooler == "bert":
        return linear_flops(1, config.hidden_size, config.hidden_size)
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


# -- one sample (or a batch of samples), given what each layer attended -----------------------------------


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


def count_with_torch(model: torch.nn.Module, batch: Any) -> int:
    """Matmul FLOPs of one forward pass as ``torch.utils.flop_counter.FlopCounterMode`` counts them
    (a cross-check of the analytic count; gradients off)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch)
    return int(counter.get_total_flops())
