"""Parameter counts of a preset, with and without the pretraining heads, beside the paper's figure.

Counts are exact and cheap: models are built on the meta device (no memory, no initialisation).
"with heads" adds docs/method.md §6's pretraining heads (tied MLM decoder, MRC over 1601 detector classes,
ITM), the way the paper counts (Table 3, ``switchbert.paper.PARAMS_M``); docs/baselines.md explains
differences above 2%.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from switchbert.paper import PARAMS_M
from switchbert.presets import get_config


@dataclass(frozen=True)
class ParamCount:
    """Parameters of one preset.

    Attributes:
        encoder: the model alone (embeddings, layers, switchers, poolers).
        with_heads: plus the pretraining heads; the tied MLM decoder is counted once.
        paper: the paper's figure in millions, or None when it reports none.
    """

    encoder: int
    with_heads: int
    paper: Optional[float]

    @property
    def diff_percent(self) -> Optional[float]:
        """(ours with heads - paper) / paper, in %."""
        if self.paper is None:
            return None
        return 100.0 * (self.with_heads / 1e6 - self.paper) / self.paper


def count_parameters(preset: str, with_heads: bool = False) -> int:
    """Parameters of the model built from ``preset`` (on the meta device: no memory, no time)."""
    c = count_preset(preset)
    return c.with_heads if with_heads else c.encoder


def count_preset(preset: str) -> ParamCount:
    """Encoder and encoder + pretraining-head parameter counts of ``preset``."""
    import torch

    from switchbert.heads.pretrain import pretrain_heads_for
    from switchbert.models import build_model

    config = get_config(preset)
    with torch.device("meta"):
        model = build_model(config)
        heads = pretrain_heads_for(model)
    encoder = sum(p.numel() for p in model.parameters())
    # MLMHead keeps the word embeddings as an unregistered reference: its parameters exclude them.
    head = sum(p.numel() for p in heads.parameters())
    return ParamCount(encoder=encoder, with_heads=encoder + head, paper=PARAMS_M.get(preset))
