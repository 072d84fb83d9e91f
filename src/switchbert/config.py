"""Typed model configuration, validated on construction.

A model is described by data: which attention modes a layer may switch among (``sab_modes``), which
inputs the Switch-Input Block offers (``sib``), how many options run (``top_k``). The paper's variants
are values of these fields, not combinations of booleans (docs/method.md §3.4):

    Switch-BERT     sab_modes=("SS", "SC", "CS", "J"), sib="out_mid_in"
    SAB-only        sab_modes=("SS", "SC", "CS", "J"), sib=None
    SIB-only        sab_modes=("J",),                  sib="out_mid_in"
    neither         sab_modes=("J",),                  sib=None          (= the UNITER architecture)

Fields tagged [ours] fill a gap in the paper; docs/method.md gives the reasoning.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

MODES: tuple[str, ...] = ("SS", "SC", "CS", "J")
"""Attention modes of SAB (paper Table 1): self-self, self-cross, cross-self, joint."""
ATTENTION_IMPLS: tuple[str, ...] = ("fused", "sdpa", "flex", "reference")
"""Soft-mixture attention kernels (``ModelConfig.attention_impl``)."""

SIB_CANDIDATE_SETS: dict[str, tuple[str, ...]] = {
    # [ours] the paper's three-element set: previous output, previous post-attention state, previous input.
    "out_mid_in": ("out", "mid", "in"),
    # [ours] alternative: outputs of the three layers below.
    "last3": ("l-1", "l-2", "l-3"),
}
ALIGNMENTS: tuple[str, ...] = ("hadamard", "concat", "rich")
ARCHS: tuple[str, ...] = ("switchbert", "lxmert", "vilbert")
POOLERS: tuple[str, ...] = ("volta", "bert")
EMBEDDINGS: tuple[str, ...] = ("uniter", "visualbert", "vlbert", "lxmert", "vilbert")
"""Region (and text) embedding variants of docs/method.md §2/§5; layers/embeddings*.py implement them."""

VLBERT_TEXT_VISUAL: tuple[str, ...] = ("img", "last")
"""``ModelConfig.vlbert_text_visual``: the IMG token's visual vector (ours) or the last slot's (VOLTA)."""
BOX_EMBEDDINGS: tuple[str, ...] = ("lxmert", "vilbert")
"""Variants whose box projection can take LXMERT's 4-d boxes (``region_box_dim=4``) and whose width
can differ from the text stream's (``region_hidden_size``)."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes a model's architecture and size.

    Sizes follow BERT naming. ``arch`` picks the model family; the switch fields only matter for
    ``arch="switchbert"`` (single-stream layers, of which UNITER, VisualBERT and VL-BERT are the
    fixed-joint special case).
    """

    name: str = "custom"
    arch: str = "switchbert"
    embedding: str = "uniter"

    num_layers: int = 12
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    pooler_size: int = 1024
    vocab_size: int = 30522
    max_position: int = 512
    type_vocab_size: int = 2
    region_feat_dim: int = 2048
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    fusion_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    # Switch-Attention Block. One mode = a fixed architecture without a switcher.
    sab_modes: tuple[str, ...] = MODES
    # Switch-Input Block candidate set, or None for no SIB.
    sib: Optional[str] = "out_mid_in"
    # How the switcher sees the two modalities: g_t*g_r, [g_t; g_r], or [g_t; g_r; g_t*g_r; |g_t-g_r|].
    alignment: str = "hadamard"
    # Switch-Attention Block: keep the K most likely attention modes per sample in training (None = all),
    # the paper's top-K paths (§3.4.5, Table 7). With K = 1 the straight-through estimator still needs
    # every mode's output in the backward pass, so K = 1 training computes all modes (docs/analysis.md).
    top_k: Optional[int] = None
    # Switch-Input Block: the same for its input candidates (None = all). Separate from ``top_k``: the
    # paper's top-K is about SAB paths, so by default the SIB always mixes every candidate.
    sib_top_k: Optional[int] = None
    # "soft": Gumbel-softmax mixture (paper). "hard_st": straight-through one-hot (ablation only).
    switch_training: str = "soft"
    # Where the switchers start: "uniform" (near-uniform p, the paper's reading) or "identity" [ours]: the
    # last layer's bias gives the identity option (J for a SAB, ``out`` for a SIB) the logit
    # ``switch_init_logit``, so the model starts as its UNITER and learns to depart from it
    # (docs/method.md "Switcher initialisation"). Only a model built from scratch is affected: loaded
    # weights (init_from, checkpoints) replace the initial ones.
    switch_init: str = "uniform"
    switch_init_logit: float = 4.0  # p(identity) = e^4 / (e^4 + K - 1): 0.95 of 4 modes, 0.96 of 3 inputs
    # Scale of the training-time Gumbel noise [ours]: 1 = the paper's Gumbel-softmax, 0 = the noise-free
    # mixture softmax(log p / tau) (docs/method.md "Switcher initialisation and route noise").
    switch_noise: float = 1.0

    # Dual-stream baselines (arch="lxmert" / "vilbert"); see models/ of the baselines.
    text_layers: int = 0
    region_layers: int = 0
    cross_layers: int = 0
    region_hidden_size: int = 0  # 0 = hidden_size
    region_num_heads: int = 0  # 0 = num_heads
    region_intermediate_size: int = 0  # 0 = intermediate_size
    # How many BERT layers initialise the text-stream slots of a dual-stream model, in order
    # (0 = one per slot). VOLTA's LXMERT has 9 + 5 = 14 text slots but BERT-base gives 12, so the
    # last two cross layers' text sub-layers start random (docs/method.md §5, VOLTA ctrl_lxmert.json).
    bert_layers: int = 0
    # Box numbers the region embedding reads: 5 = (x1, y1, x2, y2, area) as in the controlled setting
    # (docs/method.md §2); 4 = (x1, y1, x2, y2), HF LXMERT's ``visual_pos_dim`` (lxmert/vilbert embeddings only).
    region_box_dim: int = 5
    # VL-BERT's sinusoidal box embedding: 4 coordinates x (sin, cos) x this many frequencies
    # (VOLTA ``v_coordinate_embeddings_dim``: 256, so 2048 + 2048 features -> 4096 -> D).
    vlbert_coord_dim: int = 256
    # Which slot's visual vector VL-BERT adds to every text token: "img" = the IMG token, the whole
    # image (ours; what the VL-BERT paper describes), or "last" = the last region slot, which is what
    # VOLTA's code takes (``final_feats[:, -1]``; with regions padded to the batch's longest, a padding
    # slot for the shorter samples). Importing a VOLTA checkpoint sets "last" (docs/baselines.md).
    vlbert_text_visual: str = "img"
    # VL-BERT's visual LayerNorm gains at initialisation (VL-BERT's ``visual_scale_object_init`` and
    # ``visual_scale_text_init``; ``LN_obj`` / ``LN_txt`` in docs/baselines.md). 0, VL-BERT's and VOLTA's,
    # starts with no image in the region tokens, so that vision enters a pretrained BERT gradually;
    # from random weights on a small budget the gains hardly move and the model answers from the text
    # alone (docs/training.md, "A learning-rate sweep per architecture"). 1 on the object side lets the
    # region tokens carry the image from step 0; 1 on the text side swamps every word with the image.
    vlbert_object_gain_init: float = 0.0
    vlbert_text_gain_init: float = 0.0
    # LayerNorm at the end of the MRC head's transform (BERT's prediction-head transform). VOLTA's
    # controlled VL-BERT turns it off (``image_head_ln: false``), the other baselines keep it; a VOLTA
    # import follows the checkpoint (the LayerNorm exists there or not).
    mrc_head_norm: bool = True
    # The pooled vector the heads read. "volta": VOLTA's ReLU poolers (D -> P) on [CLS] and IMG and their
    # product (the controlled setting, docs/method.md §4). "bert": BERT's pooler, tanh(Linear(D -> D)) of
    # [CLS] alone, as HF VisualBERT and LXMERT (and the original UNITER) pool; ``pooler_size`` must then
    # equal ``hidden_size``. An HF import with "bert" maps the HF pooler and ITM classifier too [ours].
    pooler: str = "volta"

    # Runtime choice of the soft-mixture attention kernel (layers/block_attention.py, lse_attention.py):
    # "fused" (one score matrix, hand-written backward), "sdpa" (three SDPA calls, no score matrix), "flex"
    # (one attention per key block with its log-sum-exp, merged; FlexAttention on CUDA under torch.compile)
    # or "reference" (each mode separately, autograd; tests and audits). All compute the same function
    # (flex drops out the attention output, not the probabilities: layers/lse_attention.py). "fused" is the
    # default on every device: fastest on CPU (BENCHMARKS.md); on a GPU not measured yet.
    attention_impl: str = "fused"

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON gives lists; the config is hashable and immutable, so normalise to tuples.
        if isinstance(self.sab_modes, (list, str)):
            modes = (self.sab_modes,) if isinstance(self.sab_modes, str) else tuple(self.sab_modes)
            object.__setattr__(self, "sab_modes", modes)
        self._validate()

    def _validate(self) -> None:
        def bad(field_name: str, msg: str) -> None:
            raise ValueError(f"ModelConfig.{field_name}: {msg}")

        if self.arch not in ARCHS:
            bad("arch", f"must be one of {ARCHS}, got {self.arch!r}")
        if self.embedding not in EMBEDDINGS:
            bad("embedding", f"must be one of {EMBEDDINGS}, got {self.embedding!r}")
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size", "pooler_size",
                     "vocab_size", "max_position", "type_vocab_size", "region_feat_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                bad(name, f"must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            bad("num_heads", f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.type_vocab_size < 2:
            bad("type_vocab_size", "needs 2 entries: type 0 for text, type 1 for regions")
        for name in ("hidden_dropout", "attention_dropout", "fusion_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                bad(name, f"must be in [0, 1), got {value}")
        for name in ("layer_norm_eps", "initializer_range"):
            value = getattr(self, name)
            # "not value > 0" also refuses NaN; inf is refused explicitly (it would make every weight inf).
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < float("inf")):
                bad(name, f"must be a finite number > 0, got {value!r}")
        if not self.sab_modes:
            bad("sab_modes", f"needs at least one mode of {MODES}")
        unknown = [m for m in self.sab_modes if m not in MODES]
        if unknown:
            bad("sab_modes", f"unknown modes {unknown}; choose from {MODES}")
        if len(set(self.sab_modes)) != len(self.sab_modes):
            bad("sab_modes", f"lists a mode twice: {self.sab_modes}")
        if self.sib is not None and self.sib not in SIB_CANDIDATE_SETS:
            bad("sib", f"must be None or one of {tuple(SIB_CANDIDATE_SETS)}, got {self.sib!r}")
        if self.alignment not in ALIGNMENTS:
            bad("alignment", f"must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            bad("top_k", f"must be None or a positive integer, got {self.top_k!r}")
        if self.sib_top_k is not None and (not isinstance(self.sib_top_k, int) or self.sib_top_k < 1):
            bad("sib_top_k", f"must be None or a positive integer, got {self.sib_top_k!r}")
        if self.switch_training not in ("soft", "hard_st"):
            bad("switch_training", f"must be 'soft' or 'hard_st', got {self.switch_training!r}")
        if self.switch_init not in ("uniform", "identity"):
            bad("switch_init", f"must be 'uniform' or 'identity', got {self.switch_init!r}")
        if not (self.switch_init_logit >= 0 and math.isfinite(self.switch_init_logit)):
            bad("switch_init_logit", f"must be finite and >= 0, got {self.switch_init_logit}")
        if not (self.switch_noise >= 0 and math.isfinite(self.switch_noise)):
            bad("switch_noise", f"must be finite and >= 0, got {self.switch_noise}")
        if self.pooler not in POOLERS:
            bad("pooler", f"must be one of {POOLERS}, got {self.pooler!r}")
        if self.pooler == "bert" and self.pooler_size != self.hidden_size:
            bad("pooler_size", f"must equal hidden_size ({self.hidden_size}) with pooler 'bert' (tanh, D -> D); "
                               f"got {self.pooler_size}")
        if self.attention_impl not in ATTENTION_IMPLS:
            bad("attention_impl", f"must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.region_hidden_size and self.region_hidden_size % self.region_num_heads_ != 0:
            bad("region_num_heads", "region_hidden_size is not divisible by the region head count")
        self._validate_baselines(bad)

    def _validate_baselines(self, bad: Any) -> None:
        """Checks of the dual-stream and embedding fields (docs/method.md §5)."""
        for name in ("text_layers", "region_layers", "cross_layers", "region_hidden_size", "region_num_heads",
                     "region_intermediate_size", "bert_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                bad(name, f"must be a non-negative integer, got {value!r}")
        if self.region_box_dim not in (4, 5):
            bad("region_box_dim", f"must be 5 (x1, y1, x2, y2, area) or 4 (x1, y1, x2, y2), got {self.region_box_dim!r}")
        if self.region_box_dim == 4 and self.embedding not in BOX_EMBEDDINGS:
            bad("region_box_dim", f"4-d boxes need an embedding in {BOX_EMBEDDINGS}, not {self.embedding!r}")
        if not isinstance(self.vlbert_coord_dim, int) or self.vlbert_coord_dim <= 0:
            bad("vlbert_coord_dim", f"must be a positive integer, got {self.vlbert_coord_dim!r}")
        if self.vlbert_text_visual not in VLBERT_TEXT_VISUAL:
            bad("vlbert_text_visual", f"must be one of {VLBERT_TEXT_VISUAL}, got {self.vlbert_text_visual!r}")
        for name in ("vlbert_object_gain_init", "vlbert_text_gain_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(name, f"must be a finite number, got {value!r}")
        if not isinstance(self.mrc_head_norm, bool):
            bad("mrc_head_norm", f"must be true or false, got {self.mrc_head_norm!r}")
        wide = self.region_hidden_size_ != self.hidden_size
        if wide and self.embedding not in BOX_EMBEDDINGS:
            bad("region_hidden_size", f"a region stream of width {self.region_hidden_size} != hidden_size "
                f"{self.hidden_size} needs an embedding in {BOX_EMBEDDINGS}, not {self.embedding!r}")
        if self.arch == "switchbert":
            # One stream: every dual-stream field must stay at its default, so a typo is not ignored.
            for name in ("text_layers", "region_layers", "cross_layers", "bert_layers"):
                if getattr(self, name):
                    bad(name, "applies to arch 'lxmert'/'vilbert' only; arch='switchbert' uses num_layers")
            if wide or self.region_num_heads or self.region_intermediate_size:
                bad("region_hidden_size", "a single-stream model has one width: leave the region_* sizes at 0")
            return
        if self.cross_layers < 1:
            bad("cross_layers", f"arch={self.arch!r} needs at least one cross layer")
        if self.sab_modes != ("J",) or self.sib is not None or self.top_k is not None or self.sib_top_k is not None:
            bad("sab_modes", f"arch={self.arch!r} has no switches: use sab_modes=('J',), sib=None, top_k=None, "
                "sib_top_k=None")
        if self.arch == "lxmert" and wide:
            bad("region_hidden_size", "LXMERT shares one cross-attention between the streams: widths must match")
        if self.bert_layers > self.text_slots:
            bad("bert_layers", f"{self.bert_layers} exceeds the {self.text_slots} text-stream slots "
                f"(text_layers + cross_layers) of arch={self.arch!r}")

    # Derived sizes of the region stream (dual-stream models may use a different width).
    @property
    def region_hidden_size_(self) -> int:
        return self.region_hidden_size or self.hidden_size

    @property
    def region_num_heads_(self) -> int:
        return self.region_num_heads or self.num_heads

    @property
    def region_intermediate_size_(self) -> int:
        return self.region_intermediate_size or self.intermediate_size

    @property
    def text_slots(self) -> int:
        """Dual-stream: text sub-layer pairs a BERT layer can initialise (text-only + cross layers)."""
        return self.text_layers + self.cross_layers

    @property
    def switches_attention(self) -> bool:
        """True when layers choose among several attention modes (has SAB switchers)."""
        return len(self.sab_modes) > 1

    @property
    def sib_candidates(self) -> tuple[str, ...]:
        return SIB_CANDIDATE_SETS[self.sib] if self.sib is not None else ()

    def replace(self, **overrides: Any) -> "ModelConfig":
        """A copy with ``overrides`` applied; an unknown field name is a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sab_modes"] = list(self.sab_modes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        """Builds a config from a dict (e.g. ``config.json``); unknown keys are a ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**d)
