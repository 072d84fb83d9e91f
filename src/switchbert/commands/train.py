"""Commands ``pretrain``, ``finetune``, ``evaluate`` and ``report``.

    switchbert pretrain configs/pretrain/switchbert.yaml train.lr=2e-4 [--resume] [-v]

Options, the positional and the overrides may come in any order.
    switchbert finetune configs/vqa/switchbert.yaml model.init_from=runs/pretrain/switchbert [--resume]
    switchbert evaluate runs/vqa/switchbert-seed0 [--splits val test] [--checkpoint DIR]
    switchbert report runs/*/ --out table.md

Each also runs as ``main(argv)`` (``pretrain_main`` ...), which tests call. Under ``torchrun`` the same
commands train with DDP. Config problems stop with a message before any work starts.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from switchbert.commands.parsing import ArgumentParser, add_verbose, run_command
from switchbert.train.config import ConfigError, load_config
from switchbert.train.preflight import check_paths, check_splits


# ---------------------------------------------------------------------------------------- arguments
def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML or a packaged recipe name (vqa/uniter; `switchbert configs` "
                   "lists them); --print-config shows every key resolved")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="dotted overrides, e.g. train.lr=2e-5")
    p.add_argument("--resume", action="store_true", help="continue output_dir/last exactly where it stopped")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved config (defaults and overrides applied) and exit without running")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a run directory (with config.yaml) or an experiment YAML")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value", help="dotted overrides of the run's config")
    p.add_argument("--checkpoint", default=None, help="checkpoint or run directory (default: the run's best/)")
    p.add_argument("--splits", nargs="+", default=None, help="splits to score (default: the task's test splits)")
    p.add_argument("--out", default=None, help="directory for result files (default: OUTPUT_DIR/eval)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="run directories (their results.jsonl), a directory of runs (every "
                   "results.jsonl under it) or result files (.jsonl/.json)")
    p.add_argument("--out", default=None, help="write the markdown table here too")
    p.add_argument("--paper", action="store_true",
                   help="add the paper's Table 3 rows (the default when a model of the paper's is among the runs)")
    p.add_argument("--no-paper", action="store_true", help="leave out the paper's rows")
    p.add_argument("--column", action="append", default=None, metavar="TITLE=TASK:METRIC",
                   help="a column (repeatable; replaces the default Table 3 columns, which use the splits the "
                        "records have: VQAv2 val when there is no test-dev record), e.g. 'VQAv2 val=vqa:accuracy_val'")
    p.add_argument("--decimals", type=int, default=1)


# ----------------------------------------------------------------------------------------- commands
def run_train(args: argparse.Namespace, stage: str) -> int:
    from switchbert.train.trainer import Trainer

    config = load_config(args.config, args.overrides)
    if getattr(args, "print_config", False):
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        print(f"# result records name the model {config.report_name!r}; recipe hash {config.recipe_hash or '(defaults)'}")
        return 0
    if stage == "pretrain" and config.task != "pretrain":
        raise ConfigError(f"{args.config}: task is {config.task!r}; use `switchbert finetune` for downstream tasks")
    if stage == "finetune" and config.task == "pretrain":
        raise ConfigError(f"{args.config}: task is 'pretrain'; use `switchbert pretrain`")
    check_paths(config, args.config)
    if not args.resume:  # a resumed run checked them when it started
        check_splits(config, args.config)
    result = Trainer(config, resume=args.resume, source=args.config).fit()
    if result.get("signal") is not None:  # SIGTERM / SIGINT: last/ is written; the shell's 128 + N
        return 128 + int(result["signal"])
    if not result["is_main"]:
        return 0
    best = result["best_value"]
    logging.getLogger(__name__).info(
        "%s finished at step %d%s; best %s = %s; outputs in %s", stage, result["step"],
        " (stopped early by train.stop_after)" if result["stopped_early"] else "", result["best_metric"],
        "-" if best is None else f"{best:.4f}", config.output_dir)
    return 0


def _config_first(args: argparse.Namespace) -> argparse.Namespace:
    """``pretrain a=1 CONFIG``: argparse took the first positional as CONFIG; the YAML is the one without '='."""
    if "=" in args.config:
        plain = [o for o in args.overrides if "=" not in o]
        if len(plain) == 1:
            rest = [o for o in args.overrides if "=" in o]
            args.overrides, args.config = [args.config] + rest, plain[0]
    return args


def run_evaluate(args: argparse.Namespace) -> int:
    from switchbert.train.evaluate import evaluate

    if args.splits:  # `--splits val a=1`: nargs="+" took the override too; it is one
        args.overrides = list(args.overrides) + [s for s in args.splits if "=" in s]
        args.splits = [s for s in args.splits if "=" not in s] or None
    run = Path(args.run)
    config_path = run / "config.yaml" if run.is_dir() else run
    if run.is_dir() and not config_path.is_file() and (run.parent / "config.yaml").is_file():
        config_path = run.parent / "config.yaml"  # RUN/best or RUN/last: that checkpoint of the run
    config = load_config(config_path, args.overrides)
    check_paths(config, str(config_path), need_train=False)
    checkpoint = Path(args.checkpoint) if args.checkpoint else (run if run.is_dir() else None)
    results = evaluate(config, checkpoint, args.splits, Path(args.out) if args.out else None,
                       progress=not args.no_progress)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return 0  # rank 0 reports
    for split, metrics in results.items():
        shown = "  ".join(f"{k} {v:.2f}" for k, v in metrics.items()) or "(result file only: no annotations)"
        print(f"{config.task} {split}: {shown}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from switchbert.io import atomic_write_text
    from switchbert.metrics import aggregate_runs, format_table3, load_records, split_recipes
    from switchbert.metrics.aggregate import check_columns, compare_models, default_columns, has_paper_model
    from switchbert.train.evaluate import RESULTS_NAME

    files, unevaluated = [], []
    for p in map(Path, args.paths):
        if p.is_file():
            files.append(p)
        elif (p / RESULTS_NAME).is_file():
            files.append(p / RESULTS_NAME)
        elif p.is_dir() and sorted(p.rglob(RESULTS_NAME)):  # a parent of runs: every run under it
            files.extend(sorted(p.rglob(RESULTS_NAME)))
            unevaluated += _runs_without_results(p, RESULTS_NAME)
        else:
            raise FileNotFoundError(f"{p}: no result records in or under it (run `switchbert evaluate` on the run first)")
    if unevaluated:  # else a seed missing from a row looks like a model run fewer times
        names = ", ".join(map(str, unevaluated[:4])) + (", ..." if len(unevaluated) > 4 else "")
        print(f"switchbert report: note: {len(unevaluated)} run(s) have no {RESULTS_NAME} and are not in the table "
              f"(not evaluated yet: `switchbert evaluate RUN`): {names}", file=sys.stderr)
    raw = load_records(files)
    records = [{k: r[k] for k in ("model", "task", "metric", "seed", "value")} for r in raw]
    records = split_recipes(records, [r.get("recipe") for r in raw])
    summaries = aggregate_runs(records)
    columns = tuple(_parse_column(c) for c in args.column) if args.column else None
    if columns is not None:
        check_columns(summaries, columns)
    # The paper's rows when asked (--paper), or by default when a model of the paper's is among the runs.
    include_paper = args.paper or (not args.no_paper and has_paper_model(summaries))
    table = format_table3(summaries, columns=columns, include_paper=include_paper, decimals=args.decimals)
    verdicts = compare_models(summaries, columns or default_columns(summaries), args.decimals)
    if verdicts:
        table += "\n\n" + "\n".join(f"- {v}" for v in verdicts)
    print(table)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    return 0


def _runs_without_results(parent: Path, results_name: str) -> list[Path]:
    """Run directories under ``parent`` (a ``config.yaml`` beside ``best/`` or ``last/``) without results."""
    runs = {c.parent for c in parent.rglob("config.yaml") if (c.parent / "best").is_dir() or (c.parent / "last").is_dir()}
    return sorted(r for r in runs if not (r / results_name).is_file())


def _parse_column(text: str):
    from switchbert.metrics import Table3Column

    title, sep, rest = text.partition("=")
    task, sep2, metric = rest.partition(":")
    if not (sep and sep2 and title and task and metric):
        raise ValueError(f"--column {text!r}: expected TITLE=TASK:METRIC, e.g. 'VQAv2 val=vqa:accuracy_val'")
    return Table3Column(title, task, metric)


# ------------------------------------------------------------------------------------ registration
def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``pretrain``, ``finetune``, ``evaluate`` and ``report`` to the ``switchbert`` command."""
    p = subparsers.add_parser("pretrain", help="pretrain on image-caption pairs (MLM + MRC-KL + ITM)")
    _add_train_args(p)
    p.set_defaults(func=lambda a: run_train(_config_first(a), "pretrain"))
    p = subparsers.add_parser("finetune", help="fine-tune on VQA, retrieval or referring expressions")
    _add_train_args(p)
    p.set_defaults(func=lambda a: run_train(_config_first(a), "finetune"))
    p = subparsers.add_parser("evaluate", help="score a checkpoint on its task's splits; writes result files")
    _add_eval_args(p)
    p.set_defaults(func=run_evaluate)
    from switchbert.commands import predict  # `switchbert predict`, beside evaluate in --help

    predict.register(subparsers)
    p = subparsers.add_parser("report", help="mean ± std over seeds per model and task, as the paper's Table 3")
    _add_report_args(p)
    p.set_defaults(func=run_report)


def _main(prog: str, add_args: Callable[[argparse.ArgumentParser], None], run: Callable[[argparse.Namespace], int],
          argv: Optional[Sequence[str]]) -> int:
    parser = ArgumentParser(prog=f"switchbert {prog}")
    add_verbose(parser, top=True)
    add_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return run_command(f"switchbert {prog}", run, args)


def pretrain_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("pretrain", _add_train_args, lambda a: run_train(_config_first(a), "pretrain"), argv)


def finetune_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("finetune", _add_train_args, lambda a: run_train(_config_first(a), "finetune"), argv)


def evaluate_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("evaluate", _add_eval_args, run_evaluate, argv)


def report_main(argv: Optional[Sequence[str]] = None) -> int:
    return _main("report", _add_report_args, run_report, argv)


if __name__ == "__main__":  # python -m switchbert.commands.train pretrain CONFIG ... (what torchrun runs)
    commands = {"pretrain": pretrain_main, "finetune": finetune_main, "evaluate": evaluate_main,
                "report": report_main}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m switchbert.commands.train {{{','.join(commands)}}} ...", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
