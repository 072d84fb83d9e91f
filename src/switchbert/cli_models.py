"""``switchbert models``: every preset with its size."""

from __future__ import annotations

import argparse

from switchbert.presets import PRESETS, get_config


def count_parameters(preset: str) -> int:
    """Parameters of the encoder built from ``preset`` (built on the meta device: no memory, no time)."""
    import torch

    from switchbert.models import build_model

    with torch.device("meta"):
        model = build_model(get_config(preset))
    return sum(p.numel() for p in model.parameters())


def run(args: argparse.Namespace) -> int:
    rows = []
    for name in sorted(PRESETS):
        c = get_config(name)
        shape = f"{c.num_layers}L/{c.hidden_size}/{c.num_heads}h"
        sib = c.sib or "-"
        rows.append((name, c.arch, shape, ",".join(c.sab_modes), sib, str(c.top_k or "all"),
                     f"{count_parameters(name) / 1e6:.1f}M"))
    header = ("preset", "arch", "shape", "modes", "SIB", "top-K", "params")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the model presets with their parameter counts")
    p.set_defaults(func=run)
