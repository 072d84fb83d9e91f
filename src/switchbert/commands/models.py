"""``switchbert models``: every preset with its size, beside the paper's figure (docs/method.md §5).

The counts come from ``analysis.params.count_preset`` (meta device: no memory, no time).
"""

from __future__ import annotations

import argparse

from switchbert.config import ModelConfig
from switchbert.presets import PRESETS, get_config


def shape_string(c: ModelConfig) -> str:
    """``12L/768/12h`` for one stream; ``9T+5R+5X/768/12h`` for a dual-stream model."""
    if c.arch == "switchbert":
        return f"{c.num_layers}L/{c.hidden_size}/{c.num_heads}h"
    width = f"{c.hidden_size}" if c.region_hidden_size_ == c.hidden_size else f"{c.hidden_size}|{c.region_hidden_size_}"
    return f"{c.text_layers}T+{c.region_layers}R+{c.cross_layers}X/{width}/{c.num_heads}h"


def run(args: argparse.Namespace) -> int:
    from switchbert.analysis.params import count_preset

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
