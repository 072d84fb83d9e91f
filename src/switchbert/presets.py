"""Named model configurations: small plain functions in a plain dict.

Ablations are data (docs/method.md §3.4): each is a base preset plus field overrides.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from switchbert.config import MODES, ModelConfig


def switchbert_base() -> ModelConfig:
    """Switch-BERT at BERT-base size (paper §3.2): 12 layers, 768 wide, 4 modes, SIB out/mid/in."""
    return ModelConfig(name="switchbert-base")


def switchbert_small() -> ModelConfig:
    """6 layers, 384 wide: the shape of the offline all-MiniLM-L6-v2 weights."""
    return ModelConfig(name="switchbert-small", num_layers=6, hidden_size=384, num_heads=12,
                       intermediate_size=1536, pooler_size=512)


def switchbert_mini() -> ModelConfig:
    """4 layers, hidden 128: fast enough to train on a laptop CPU in minutes (the demo's default)."""
    return ModelConfig(name="switchbert-mini", num_layers=4, hidden_size=128, num_heads=4,
                       intermediate_size=512, pooler_size=128, region_feat_dim=2048)


def switchbert_tiny() -> ModelConfig:
    """For tests and smoke runs: 3 layers (so ``last3`` has three inputs), hidden 32, 64-d features."""
    return ModelConfig(name="switchbert-tiny", num_layers=3, hidden_size=32, num_heads=4,
                       intermediate_size=64, pooler_size=48, region_feat_dim=64, max_position=64)


def _variant(base: Callable[[], ModelConfig], name: str, **overrides: Any) -> Callable[[], ModelConfig]:
    def make() -> ModelConfig:
        return base().replace(name=name, **overrides)

    make.__doc__ = f"{base.__name__} with {overrides}"
    return make


# -- the controlled-setting baselines (docs/method.md §5, VOLTA config/ctrl_*.json) -----------------------------
# Single-stream baselines are the fixed-joint special case of the Switch-BERT model: one mode (J), no
# SIB, so no switcher; they differ only in their embeddings.
FIXED_JOINT: dict[str, Any] = dict(sab_modes=("J",), sib=None, top_k=None, sib_top_k=None)
TINY: dict[str, Any] = dict(hidden_size=32, num_heads=4, intermediate_size=64, pooler_size=48, region_feat_dim=64,
                            max_position=64)
"""The size scheme of ``switchbert-tiny``, shared by every tiny preset (tests and smoke runs)."""


SMALL: dict[str, Any] = dict(hidden_size=384, num_heads=12, intermediate_size=1536, pooler_size=512)
"""The size scheme of ``switchbert-small`` (all-MiniLM-L6-v2's width), shared by every small preset."""
MINI: dict[str, Any] = dict(hidden_size=128, num_heads=4, intermediate_size=512, pooler_size=128,
                            region_feat_dim=2048)
"""The size scheme of ``switchbert-mini``, shared by every mini preset (2048-d BUTD features)."""


def lxmert_base() -> ModelConfig:
    """LXMERT: 9 text + 5 region layers, then 5 cross layers; BERT fills 12 of the 14 text slots."""
    return ModelConfig(name="lxmert-base", arch="lxmert", embedding="lxmert", sab_modes=("J",), sib=None,
                       text_layers=9, region_layers=5, cross_layers=5, bert_layers=12)


def vilbert_base() -> ModelConfig:
    """ViLBERT: 6 text layers, then 6 co-attention blocks (768 wide in both streams, as VOLTA's ctrl)."""
    return ModelConfig(name="vilbert-base", arch="vilbert", embedding="vilbert", sab_modes=("J",), sib=None,
                       text_layers=6, region_layers=0, cross_layers=6)


def lxmert_small() -> ModelConfig:
    """LXMERT's layout at the small width: 4 text + 2 region layers, 2 cross layers; a 6-layer BERT
    (MiniLM) fills all 6 text slots."""
    return ModelConfig(name="lxmert-small", arch="lxmert", embedding="lxmert", sab_modes=("J",), sib=None,
                       text_layers=4, region_layers=2, cross_layers=2, bert_layers=6, **SMALL)


def vilbert_small() -> ModelConfig:
    """ViLBERT's layout at the small width: 3 text layers, then 3 co-attention blocks."""
    return ModelConfig(name="vilbert-small", arch="vilbert", embedding="vilbert", sab_modes=("J",), sib=None,
                       text_layers=3, cross_layers=3, **SMALL)


def lxmert_mini() -> ModelConfig:
    """LXMERT's layout at the mini width: 2 text + 1 region layers, 2 cross layers (4 text slots, as
    switchbert-mini has 4 layers)."""
    return ModelConfig(name="lxmert-mini", arch="lxmert", embedding="lxmert", sab_modes=("J",), sib=None,
                       text_layers=2, region_layers=1, cross_layers=2, **MINI)


def vilbert_mini() -> ModelConfig:
    """ViLBERT's layout at the mini width: 2 text layers, then 2 co-attention blocks."""
    return ModelConfig(name="vilbert-mini", arch="vilbert", embedding="vilbert", sab_modes=("J",), sib=None,
                       text_layers=2, cross_layers=2, **MINI)


def lxmert_tiny() -> ModelConfig:
    """LXMERT's layout in miniature: 2 text + 1 region layers, 2 cross layers, BERT fills 3 of 4 slots."""
    return ModelConfig(name="lxmert-tiny", arch="lxmert", embedding="lxmert", sab_modes=("J",), sib=None,
                       text_layers=2, region_layers=1, cross_layers=2, bert_layers=3, **TINY)


def vilbert_tiny() -> ModelConfig:
    """ViLBERT's layout in miniature: 2 text layers, 2 co-attention blocks."""
    return ModelConfig(name="vilbert-tiny", arch="vilbert", embedding="vilbert", sab_modes=("J",), sib=None,
                       text_layers=2, cross_layers=2, **TINY)


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "switchbert-base": switchbert_base,
    "switchbert-small": switchbert_small,
    "switchbert-mini": switchbert_mini,
    "switchbert-tiny": switchbert_tiny,
    # The paper's ablations (§3.4, Tables 4-7), BERT-base sized. docs/method.md §3.4.
    "switchbert-base-sab-only": _variant(switchbert_base, "switchbert-base-sab-only", sib=None),
    "switchbert-base-sib-only": _variant(switchbert_base, "switchbert-base-sib-only", sab_modes=("J",)),
    "switchbert-base-neither": _variant(switchbert_base, "switchbert-base-neither", sab_modes=("J",), sib=None),
    # Table 4 ablates the mode space {SC, CS}, {J}, {SC, CS, J}; docs/method.md §3.1 (docs/method.md §3.1) reads SS
    # as kept in each, so the rows are {SS, SC, CS}, {SS, J} and {SS, SC, CS, J}. Each preset is named by
    # the modes it holds. The last row is the full Switch-BERT (``switchbert-base``): no separate preset.
    # The literal reading without SS is the override ``sab_modes=("SC", "CS")`` / ``("J",)``.
    "switchbert-base-modes-ss-sc-cs": _variant(switchbert_base, "switchbert-base-modes-ss-sc-cs",
                                               sab_modes=("SS", "SC", "CS")),
    "switchbert-base-modes-ss-j": _variant(switchbert_base, "switchbert-base-modes-ss-j", sab_modes=("SS", "J")),
    # Depth (§3.4.3): 6-layer Switch-BERT, SAB-only and UNITER (BERT's first 6 layers: bert_truncate=True).
    "switchbert-base-6l": _variant(switchbert_base, "switchbert-base-6l", num_layers=6),
    "switchbert-base-sab-only-6l": _variant(switchbert_base, "switchbert-base-sab-only-6l", sib=None, num_layers=6),
    # Top-K (Table 7): the K most likely attention modes per sample run in training (the SIB keeps all its
    # candidates: ``sib_top_k``). K = 4 keeps every mode, i.e. ``switchbert-base``: no separate preset.
    "switchbert-base-top2": _variant(switchbert_base, "switchbert-base-top2", top_k=2),
    "switchbert-base-top1": _variant(switchbert_base, "switchbert-base-top1", top_k=1),
    # The baselines, BERT-base sized (docs/method.md §5).
    "uniter-base": _variant(switchbert_base, "uniter-base", embedding="uniter", **FIXED_JOINT),
    "uniter-base-6l": _variant(switchbert_base, "uniter-base-6l", embedding="uniter", num_layers=6, **FIXED_JOINT),
    "visualbert-base": _variant(switchbert_base, "visualbert-base", embedding="visualbert", **FIXED_JOINT),
    # VOLTA's ctrl_vl-bert_base.json: image_head_ln false (no LayerNorm in the region head).
    "vlbert-base": _variant(switchbert_base, "vlbert-base", embedding="vlbert", mrc_head_norm=False, **FIXED_JOINT),
    "lxmert-base": lxmert_base,
    "vilbert-base": vilbert_base,
    # Every baseline at every size of Switch-BERT, with that size's width and region-feature size, so a
    # comparison at any size needs no overrides (BASELINES, SIZES). Small: MiniLM's width.
    "uniter-small": _variant(switchbert_small, "uniter-small", embedding="uniter", **FIXED_JOINT),
    "visualbert-small": _variant(switchbert_small, "visualbert-small", embedding="visualbert", **FIXED_JOINT),
    "vlbert-small": _variant(switchbert_small, "vlbert-small", embedding="vlbert", mrc_head_norm=False,
                             **FIXED_JOINT),
    "lxmert-small": lxmert_small,
    "vilbert-small": vilbert_small,
    # Mini: the demo's size, 2048-d features.
    "uniter-mini": _variant(switchbert_mini, "uniter-mini", embedding="uniter", **FIXED_JOINT),
    "visualbert-mini": _variant(switchbert_mini, "visualbert-mini", embedding="visualbert", **FIXED_JOINT),
    "vlbert-mini": _variant(switchbert_mini, "vlbert-mini", embedding="vlbert", mrc_head_norm=False, **FIXED_JOINT),
    "lxmert-mini": lxmert_mini,
    "vilbert-mini": vilbert_mini,
    # Tiny versions of every baseline (switchbert-tiny's sizes), for tests and smoke runs.
    "uniter-tiny": _variant(switchbert_tiny, "uniter-tiny", embedding="uniter", **FIXED_JOINT),
    "visualbert-tiny": _variant(switchbert_tiny, "visualbert-tiny", embedding="visualbert", **FIXED_JOINT),
    # [ours] vlbert_object_gain_init=1: a tiny model trains from random weights, where VL-BERT's zero
    # start keeps the image out of the region tokens (docs/training.md, the learning-rate sweep).
    "vlbert-tiny": _variant(switchbert_tiny, "vlbert-tiny", embedding="vlbert", vlbert_coord_dim=8,
                            vlbert_object_gain_init=1.0, mrc_head_norm=False, **FIXED_JOINT),
    "lxmert-tiny": lxmert_tiny,
    "vilbert-tiny": vilbert_tiny,
}


SIZES: tuple[str, ...] = ("tiny", "mini", "small", "base")
"""The sizes of Switch-BERT; every baseline of :data:`BASELINES` has a preset ``<baseline>-<size>``."""
BASELINES: tuple[str, ...] = ("uniter", "visualbert", "vlbert", "lxmert", "vilbert")
"""The models Switch-BERT is compared with in the controlled setting (docs/method.md §5)."""


RETIRED_PRESETS: dict[str, str] = {
    # Old names that did not say what they held: they left out SS, which every variant keeps (docs/method.md
    # §3.1). Not aliases: a name must not change meaning silently, so each gives an error naming its replacement.
    "switchbert-base-modes-sc-cs": "it held modes SS, SC, CS: use switchbert-base-modes-ss-sc-cs",
    "switchbert-base-modes-j": "it held modes SS and J: use switchbert-base-modes-ss-j",
    "switchbert-base-modes-sc-cs-j": "it held all four modes SS, SC, CS, J, i.e. the full model: use switchbert-base",
    "switchbert-base-top4": "top-K of 4 modes keeps every mode, i.e. the full model: use switchbert-base",
}
"""Preset names that were renamed or dropped, with what to use instead."""


def get_config(preset: str, **overrides: Any) -> ModelConfig:
    """The config of ``preset`` with ``overrides`` (config field names) applied."""
    if preset in RETIRED_PRESETS:
        raise ValueError(f"preset {preset!r} was retired: {RETIRED_PRESETS[preset]}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
    config = PRESETS[preset]()
    return config.replace(**overrides) if overrides else config
