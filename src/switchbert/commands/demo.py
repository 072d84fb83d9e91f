"""``switchbert demo``: the whole system on the embedded synthetic benchmark, in one command.

Each model is trained ``--seeds`` times (2 at the default size, 3 at ``large``), the (model, seed)
pipelines ``--jobs`` at a time in parallel processes (default: one per CPU core); the report gives
mean ± std per task in the layout of the paper's Table 3 and says in words whether Switch-BERT beats
UNITER beyond the spread. The work is ``switchbert.demo``; this module parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from switchbert.demo import SIZES, ensure_data, run_demo

__all__ = ["ensure_data", "register", "run", "run_demo"]


def run(args: argparse.Namespace) -> int:
    result = run_demo(Path(args.out), args.size, args.seed, Path(args.bert_dir) if args.bert_dir else None,
                      use_bert=False if args.no_bert else None, progress=not args.no_progress, seeds=args.seeds,
                      jobs=args.jobs)
    print(f"report: {result.report}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole system on synthetic data: pretrain, fine-tune, evaluate, "
                                           "analyse routes, write report.md")
    p.add_argument("--out", default="runs/demo", help="output directory (data are cached here)")
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="tiny: seconds (CI); default: ~9 minutes on 2 CPU cores (2 seeds); large: more data and "
                        "epochs, MiniLM-initialised (3 seeds)")
    p.add_argument("--seed", type=int, default=0, help="first seed (and the data's)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train each model this many times (seeds SEED, SEED+1, ...) and report mean ± std "
                        "(default: 1 tiny, 2 default, 3 large)")
    p.add_argument("--jobs", type=int, default=None,
                   help="(model, seed) pipelines trained at once, each in its own process with an equal share of "
                        "the threads (default: one per CPU core, at most one per pipeline; 1 = all in this process)")
    p.add_argument("--bert-dir", default=None, help="BERT directory to start from (default: MiniLM when installed)")
    p.add_argument("--no-bert", action="store_true", help="start from random weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)

