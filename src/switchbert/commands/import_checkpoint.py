"""``switchbert import-checkpoint SRC DST --from volta|hf --preset NAME``: write one of our model directories.

From VOLTA the pretraining heads come too (``DST/heads.safetensors``, the file a training checkpoint
keeps them in), unless ``--no-heads``."""

from __future__ import annotations

import argparse
from pathlib import Path

from switchbert.presets import PRESETS, get_config


def run(args: argparse.Namespace) -> int:
    from switchbert.models import HEADS_NAME, save_pretrained, write_heads

    base = get_config(args.preset)
    if args.pooler is not None:
        base = base.replace(pooler=args.pooler, pooler_size=base.hidden_size if args.pooler == "bert" else base.pooler_size)
    heads = None
    if args.source_format == "volta":
        from switchbert.weights.volta import load_volta

        model, heads, report = load_volta(args.src, base, with_heads=not args.no_heads)
    else:
        from switchbert.weights.hf import load_hf, load_hf_with_heads

        if args.no_heads:
            model, report = load_hf(args.src, base)
        else:
            model, heads, report = load_hf_with_heads(args.src, base)
    print(report.summary())
    if args.source_format == "hf":
        from switchbert.weights.hf import key_groups, strict_check

        check = strict_check(report, heads=not args.no_heads, pooler=model.config.pooler)
        if args.strict and not check.passed:
            print(f"import-checkpoint: {check.failed_line()}; nothing written to {args.dst}")
            return 1
        if args.strict:
            print(f"import-checkpoint: {check.passed_line()}")
        elif check.unused:  # said without --strict too: these weights are silently dropped otherwise
            print(f"import-checkpoint: note: {len(check.unused)} checkpoint weights that should map were not used "
                  f"({key_groups(check.unused)}); --strict refuses such an import")
    elif args.strict and report.uninitialised:
        print(f"import-checkpoint: --strict and {len(report.uninitialised)} parameters are not initialised; "
              f"nothing written to {args.dst}")
        return 1
    save_pretrained(model, args.dst)
    if heads is not None:
        write_heads(heads, args.dst)
    elif (Path(args.dst) / HEADS_NAME).is_file():
        (Path(args.dst) / HEADS_NAME).unlink()  # a stale file from an earlier import would not match
        print(f"removed {Path(args.dst) / HEADS_NAME} (left by an earlier import; no heads written now)")
    print(f"wrote {args.dst} (preset {args.preset}, config {model.config.name}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
          + (", pretraining heads in heads.safetensors)" if heads is not None else ")"))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``import-checkpoint`` to the ``switchbert`` command line."""
    p = subparsers.add_parser(
        "import-checkpoint",
        help="convert a VOLTA or HF transformers checkpoint into a switchbert model directory",
        description="Reads SRC (VOLTA: a state-dict file or directory; HF: a VisualBertModel/LxmertModel "
                    "directory), maps it onto --preset's architecture, prints which keys were unused and "
                    "which parameters stay random, and writes DST with save_pretrained (from VOLTA also the "
                    "pretraining heads, DST/heads.safetensors).",
    )
    p.add_argument("src", help="checkpoint file or directory")
    p.add_argument("dst", help="output model directory (config.json + model.safetensors)")
    p.add_argument("--from", dest="source_format", choices=("volta", "hf"), required=True, help="checkpoint layout")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), metavar="NAME",
                   help="our architecture (e.g. uniter-base, lxmert-base); HF sizes override its sizes")
    p.add_argument("--strict", action="store_true",
                   help="fail (write nothing, exit 1) if a parameter stays random or a checkpoint weight is unused; "
                        "for --from hf only those that have a counterpart: the VOLTA poolers, the ITM head (and the "
                        "MRC head without an object head) start random by design, and HF's tanh pooler, ITM "
                        "classifier and answer/task heads are unused by design")
    p.add_argument("--pooler", choices=("volta", "bert"), default=None,
                   help="the pooled vector of the written model (default: the preset's, 'volta'): 'bert' pools as "
                        "HF VisualBERT/LXMERT do (tanh on [CLS], D -> D), so --from hf also imports HF's pooler "
                        "and ITM classifier (VisualBERT's rows swapped to our class 1 = matched)")
    p.add_argument("--no-heads", action="store_true",
                   help="skip the pretraining heads (by default they go to DST/heads.safetensors: from VOLTA MLM, "
                        "MRC and ITM, ITM rows mapped to our class 1 = matched; from HF the MLM head and LXMERT's "
                        "object head, whose maps are exact)")
    p.set_defaults(func=run)
