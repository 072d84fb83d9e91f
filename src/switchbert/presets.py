"""Named model configurations: small plain functions in a plain dict.

Ablations are data (SPEC §3.4): each is a base preset plus field overrides.
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


def switchbert_tiny() -> ModelConfig:
    """For tests and smoke runs: 3 layers (so ``last3`` has three inputs), hidden 32, 64-d features."""
    return ModelConfig(name="switchbert-tiny", num_layers=3, hidden_size=32, num_heads=4,
                       intermediate_size=64, pooler_size=48, region_feat_dim=64, max_position=64)


def _variant(base: Callable[[], ModelConfig], name: str, **overrides: Any) -> Callable[[], ModelConfig]:
    def make() -> ModelConfig:
        return base().replace(name=name, **overrides)

    make.__doc__ = f"{base.__name__} with {overrides}"
    return make


PRESETS: dict[str, Callable[[], ModelConfig]] = {
    "switchbert-base": switchbert_base,
    "switchbert-small": switchbert_small,
    "switchbert-tiny": switchbert_tiny,
    # The paper's ablations (Tables 4-7), BERT-base sized.
    "switchbert-base-sab-only": _variant(switchbert_base, "switchbert-base-sab-only", sib=None),
    "switchbert-base-sib-only": _variant(switchbert_base, "switchbert-base-sib-only", sab_modes=("J",)),
    "switchbert-base-neither": _variant(switchbert_base, "switchbert-base-neither", sab_modes=("J",), sib=None),
    "switchbert-base-modes-sc-cs": _variant(switchbert_base, "switchbert-base-modes-sc-cs", sab_modes=("SS", "SC", "CS")),
    "switchbert-base-modes-sc-cs-j": _variant(switchbert_base, "switchbert-base-modes-sc-cs-j", sab_modes=MODES),
    "switchbert-base-6l": _variant(switchbert_base, "switchbert-base-6l", num_layers=6),
    "switchbert-base-top2": _variant(switchbert_base, "switchbert-base-top2", top_k=2),
    "switchbert-base-top1": _variant(switchbert_base, "switchbert-base-top1", top_k=1),
}


def get_config(preset: str, **overrides: Any) -> ModelConfig:
    """The config of ``preset`` with ``overrides`` (config field names) applied."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
    config = PRESETS[preset]()
    return config.replace(**overrides) if overrides else config


def create_model(preset: str, bert_dir: Optional[str] = None, bert_truncate: bool = False, **overrides: Any):
    """Builds a model from a preset.

    Args:
        preset: a name in ``PRESETS`` (``switchbert models`` lists them).
        bert_dir: local HF BERT directory to initialise text embeddings and encoder layers from.
        bert_truncate: allow a deeper BERT than the model and use its first layers.
        overrides: config fields, e.g. ``sab_modes=("J",)``, ``sib=None``, ``top_k=2``.

    Returns:
        The model, in training mode.
    """
    from switchbert.bert_init import init_from_bert
    from switchbert.models import build_model

    model = build_model(get_config(preset, **overrides))
    if bert_dir is not None:
        init_from_bert(model, bert_dir, truncate=bert_truncate)
    return model
