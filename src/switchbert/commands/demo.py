"""``switchbert demo``: the whole system on the embedded synthetic benchmark, in one command.

Each model is trained ``--seeds`` times (2 at the default size, 3 at ``large``), the (model, seed)
pipelines ``--jobs`` at a time in parallel processes (default: one per CPU core); the report gives
mean ± std per task in the layout of the paper's Table 3 and says in words whether Switch-BERT beats
UNITER beyond the spread. The work is ``switchbert.demo``; this module parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from switchbert.demo import SIZES, Cell, DemoSize, ensure_data, run_demo, stage_config

__all__ = ["ensure_data", "experiment", "register", "run", "run_demo"]


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
                   help="tiny: seconds (CI); default: ~7 minutes on 2 CPU cores (2 seeds); large: more data and "
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


def experiment(task: str, model_overrides: dict[str, Any], size: DemoSize, data_dir: Path, manifest: dict[str, Any],
               output_dir: Path, init_from: Optional[Path], bert_dir: Optional[Path], seed: int, progress: bool,
               name: str) -> dict[str, Any]:
    """Deprecated: the old call of benchmarks/bench_retrieval_learning.py; use ``switchbert.demo.stage_config``.

    One stage's resolved config as a plain dict, with the old arguments (``output_dir`` is the stage's
    own directory; ``bert_dir`` applies when there is no ``init_from``)."""
    paths = {"output_dir": str(output_dir), "model.init_from": str(init_from) if init_from else None,
             "model.bert_dir": None if init_from or not bert_dir else str(bert_dir)}
    cell = Cell(name, model_overrides, size, Path(data_dir), Path(output_dir).parent, seed, progress=progress,
                stage_overrides={task: paths})
    return stage_config(cell, task, manifest).to_dict()
