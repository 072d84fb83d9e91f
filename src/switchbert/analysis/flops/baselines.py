"""The fixed architectures a switching model's FLOPs are compared with (paper Table 7), read from the presets.

Each baseline is its preset (``switchbert.presets``), not a description written here: UNITER is the
single-stream architecture with one mode (J) and no SIB; LXMERT and ViLBERT are the dual-stream configs,
which carry their own layer counts. The preset is the one of the switching model's size (``SIZES``:
tiny, mini, small, base, recognised by the hidden width); its widths are then set to the switching
model's, so a baseline is counted at exactly the switching model's sizes. A width that is no preset size
takes the base presets' layer layout (docs/method.md §5: LXMERT 9 text + 5 region + 5 cross layers,
ViLBERT 6 text layers + 6 co-attention blocks).

UNITER keeps the switching model's depth (``uniter-base-6l`` beside ``switchbert-base-6l``): the
all-joint special case of the same encoder.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Mapping, Optional

from switchbert.analysis.flops.count import FlopsBreakdown, fixed_flops
from switchbert.config import ModelConfig
from switchbert.presets import SIZES, get_config

BASELINE_PRESETS: dict[str, str] = {"UNITER": "uniter", "LXMERT": "lxmert", "ViLBERT": "vilbert"}
"""Table 7's fixed baselines: display name -> preset family (``<family>-<size>`` in ``PRESETS``)."""

SIZE_FIELDS: tuple[str, ...] = ("hidden_size", "num_heads", "intermediate_size", "pooler_size", "region_feat_dim",
                                "vocab_size", "max_position")
"""The widths a baseline takes from the switching model (its layer counts come from its preset)."""


def preset_size(config: ModelConfig) -> Optional[str]:
    """The preset size (``SIZES``) whose Switch-BERT has ``config``'s hidden width; None for another width."""
    for size in SIZES:
        if get_config(f"switchbert-{size}").hidden_size == config.hidden_size:
            return size
    return None


def default_baselines(config: ModelConfig) -> dict[str, ModelConfig]:
    """The fixed architectures Table 7 compares with, at ``config``'s sizes.

    Args:
        config: the switching model's config.

    Returns:
        {"UNITER", "LXMERT", "ViLBERT"} -> the ``<family>-<size>`` preset's config with ``config``'s widths
        (``SIZE_FIELDS``); UNITER with ``config.num_layers`` layers.
    """
    size = preset_size(config) or "base"
    widths = {f: getattr(config, f) for f in SIZE_FIELDS}
    out = {}
    for name, family in BASELINE_PRESETS.items():
        preset = get_config(f"{family}-{size}")
        depth = {"num_layers": config.num_layers} if preset.arch == "switchbert" else {}
        out[name] = preset.replace(**widths, **depth)
    return out


def histogram_flops(config: ModelConfig, token_counts: Mapping[tuple[int, int], int]) -> FlopsBreakdown:
    """A fixed model's FLOPs summed over a token-count histogram {(T, R): samples}."""
    total = FlopsBreakdown()
    for (t, r), n in token_counts.items():
        one = fixed_flops(config, t, r)
        total = total + FlopsBreakdown(**{f.name: getattr(one, f.name) * n for f in fields(one)})
    return total
