"""``switchbert import-checkpoint SRC DST --from volta|hf --preset NAME``: write one of our model directories."""

from __future__ import annotations

import argparse

from switchbert.presets import PRESETS, get_config


def run(args: argparse.Namespace) -> int:
    from switchbert.models import build_model
    from switchbert.pretrained import save_pretrained

    base = get_config(args.preset)
    if args.source_format == "volta":
        from switchbert.convert.volta import import_volta

        model = build_model(base)
        report = import_volta(model, args.src)
    else:
        from switchbert.convert.hf import load_hf

        model, report = load_hf(args.src, base)
    print(report.summary())
    if args.strict and report.uninitialised:
        print(f"import-checkpoint: --strict and {len(report.uninitialised)} parameters are not initialised; "
              f"nothing written to {args.dst}")
        return 1
    save_pretrained(model, args.dst)
    print(f"wrote {args.dst} (preset {args.preset}, config {model.config.name}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``import-checkpoint`` to the ``switchbert`` command line."""
    p = subparsers.add_parser(
        "import-checkpoint",
        help="convert a VOLTA or HF transformers checkpoint into a switchbert model directory",
        description="Reads SRC (VOLTA: a state-dict file or directory; HF: a VisualBertModel/LxmertModel "
                    "directory), maps it onto --preset's architecture, prints which keys were unused and "
                    "which parameters stay random, and writes DST with save_pretrained.",
    )
    p.add_argument("src", help="checkpoint file or directory")
    p.add_argument("dst", help="output model directory (config.json + model.safetensors)")
    p.add_argument("--from", dest="source_format", choices=("volta", "hf"), required=True, help="checkpoint layout")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), metavar="NAME",
                   help="our architecture (e.g. uniter-base, lxmert-base); HF sizes override its sizes")
    p.add_argument("--strict", action="store_true", help="fail (write nothing) if any parameter stays random")
    p.set_defaults(func=run)
