"""``switchbert models``: every preset with its size, beside the paper's figure (docs/method.md §5).

Counts are exact and cheap: models are built on the meta device (no memory, no initialisation).
"with heads" adds docs/method.md §6's pretraining heads (tied MLM decoder, MRC over 1601 detector classes, ITM),
the way the paper counts (Table 3); docs/baselines.md explains differences above 2%.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional

from switchbert.config import ModelConfig
from switchbert.presets import PRESETS, get_config

PAPER_PARAMS_M: dict[str, float] = {
    # Paper Table 3, "Params" column (with pretraining heads), in millions.
    "uniter-base": 114.9,
    "vlbert-base": 116.1,
    "visualbert-base": 114.9,
    "lxmert-base": 211.4,
    "vilbert-base": 242.1,
    "switchbert-base": 130.6,
}


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
    return ParamCount(encoder=encoder, with_heads=encoder + head, paper=PAPER_PARAMS_M.get(preset))


def shape_string(c: ModelConfig) -> str:
    """``12L/768/12h`` for one stream; ``9T+5R+5X/768/12h`` for a dual-stream model."""
    if c.arch == "switchbert":
        return f"{c.num_layers}L/{c.hidden_size}/{c.num_heads}h"
    width = f"{c.hidden_size}" if c.region_hidden_size_ == c.hidden_size else f"{c.hidden_size}|{c.region_hidden_size_}"
    return f"{c.text_layers}T+{c.region_layers}R+{c.cross_layers}X/{width}/{c.num_heads}h"


def run(args: argparse.Namespace) -> int:
    rows = []
    for name in sorted(PRESETS):
        c = get_config(name)
        n = count_preset(name)
        paper = f"{n.paper:.1f}M" if n.paper is not None else "-"
        diff = f"{n.diff_percent:+.1f}%" if n.diff_percent is not None else "-"
        modes = ",".join(c.sab_modes) if c.arch == "switchbert" else "-"
        rows.append((name, c.arch, c.embedding, shape_string(c), modes, c.sib or "-", str(c.top_k or "all"),
                     f"{n.encoder / 1e6:.1f}M", f"{n.with_heads / 1e6:.1f}M", paper, diff))
    header = ("preset", "arch", "embedding", "shape", "modes", "SIB", "top-K", "params", "+heads", "paper", "diff")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print("\n+heads: with the pretraining heads (tied MLM, MRC-1601, ITM), as the paper counts; "
          "paper: its Table 3; see docs/baselines.md for differences above 2%.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the model presets with their parameter counts")
    p.set_defaults(func=run)
