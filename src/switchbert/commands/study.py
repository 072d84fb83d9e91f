"""``switchbert study``: does switching help, and when? Runs (or resumes) a grid of the four models
over misalignment levels, task families, pretraining budgets and seeds, and writes OUT/report.md with
the paired comparisons with UNITER, the gains figure and Switch-BERT's routes (docs/study.md). The work
is ``switchbert.study``; this module parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from switchbert.demo.parallel import default_jobs
from switchbert.demo.progress import duration
from switchbert.study import GRIDS, projected_seconds, run_study


def run(args: argparse.Namespace) -> int:
    name = "quick" if args.quick else args.grid
    grid = GRIDS[name]
    jobs = args.jobs or default_jobs(len(grid.pipelines()))
    print(f"[study] grid {name}: projected {duration(projected_seconds(grid, jobs))} on the 2-core reference machine "
          f"with {jobs} job(s) (from measured per-stage times; a loaded machine takes longer)")
    if args.dry_run:
        return 0
    result = run_study(Path(args.out), grid, jobs=jobs, seed=args.seed, data_seed=args.data_seed)
    print(f"report: {result.report}\nfigure: {result.figure}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("study", help="does switching help, and when? four models x misalignment x task "
                                            "family x pretraining budget x seeds, compared with UNITER (resumable)")
    p.add_argument("--out", default="runs/study", help="output directory; rerun the same command to resume")
    p.add_argument("--grid", choices=sorted(GRIDS), default="default",
                   help="quick: ~10 minutes on 2 CPU cores; default: <= 90 minutes; full: hours (docs/study.md)")
    p.add_argument("--quick", action="store_true", help="the quick grid (same as --grid quick)")
    p.add_argument("--jobs", type=int, default=None,
                   help="pipelines trained at once in their own processes (default: one per CPU core)")
    p.add_argument("--seed", type=int, default=0, help="first training seed")
    p.add_argument("--data-seed", type=int, default=0, help="the synthetic benchmark's seed")
    p.add_argument("--dry-run", action="store_true", help="print the grid's projected time and stop")
    p.set_defaults(func=run)
