"""Multi-seed aggregation and the paper's Table 3 layout.

A run's result is a record ``{"model", "task", "metric", "seed", "value"}`` (value in percent).
``aggregate_runs`` turns records into mean ± std per (model, task, metric); ``format_table3`` lays
them out like Table 3 of the paper (VQAv2 test-dev, Flickr30k IR R@1, TR R@1, RefCOCO+), optionally
with the paper's own numbers (docs/method.md §10, ± from the paper's Table 3) on a row beside each model.

The std is the SAMPLE standard deviation (ddof=1) over seeds; with a single seed it is undefined
and reported as NaN (printed as the mean alone).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from switchbert.io import parse_jsonl
from switchbert.paper import TABLE3, Table3Row


@dataclass(frozen=True)
class RunSummary:
    """Mean ± sample std of one (model, task, metric) over seeds."""

    model: str
    task: str
    metric: str
    mean: float
    std: float  # ddof=1; NaN when n == 1
    n: int
    seeds: tuple[Any, ...]


SummaryKey = tuple[str, str, str]


def aggregate_runs(records: Iterable[Mapping[str, Any]]) -> dict[SummaryKey, RunSummary]:
    """Groups records by (model, task, metric) and reduces over seeds.

    Args:
        records: dicts with keys model, task, metric, seed, value. A (model, task, metric, seed)
            given twice is a ``ValueError`` (a rerun must replace, not double-count, a seed).

    Returns:
        ``{(model, task, metric): RunSummary}`` in order of first appearance.
    """
    required = ("model", "task", "metric", "seed", "value")
    groups: dict[SummaryKey, dict[Any, float]] = {}
    for i, rec in enumerate(records):
        missing = [k for k in required if k not in rec]
        if missing:
            raise ValueError(f"aggregate_runs: record {i} lacks {missing}: {dict(rec)}")
        value = float(rec["value"])
        if not math.isfinite(value):
            raise ValueError(f"aggregate_runs: record {i} has a non-finite value {rec['value']!r}")
        key = (str(rec["model"]), str(rec["task"]), str(rec["metric"]))
        seeds = groups.setdefault(key, {})
        if rec["seed"] in seeds:
            raise ValueError(f"aggregate_runs: seed {rec['seed']!r} of {key} appears twice")
        seeds[rec["seed"]] = value
    out: dict[SummaryKey, RunSummary] = {}
    for key, seeds in groups.items():
        mean, std = mean_std(list(seeds.values()))
        out[key] = RunSummary(*key, mean=mean, std=std, n=len(seeds), seeds=tuple(seeds))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value) of one metric over seeds.

    Raises:
        ValueError: no values.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_std: no values")
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else float("nan"))


def load_records(paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> list[dict[str, Any]]:
    """Reads records from JSON-lines files (one record a line) or JSON files holding a list of records."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[dict[str, Any]] = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        stripped = text.lstrip()
        records.extend(json.loads(text) if stripped.startswith("[") else parse_jsonl(text, path))
    return records


def split_recipes(records: Sequence[Mapping[str, Any]], recipes: Sequence[Optional[str]]) -> list[dict[str, Any]]:
    """Keeps one model's runs with different training recipes apart.

    One model run on one task with different recipes (``recipe`` of the records, e.g. two learning
    rates) would be averaged as if they were seeds: each recipe's records are named ``MODEL@RECIPE``
    (``MODEL@default`` for a record without one), with a warning. A model run with one recipe keeps
    its name.

    Args:
        records: result records (``model``, ``task``, ...), one per entry of ``recipes``.
        recipes: each record's recipe, or None.

    Returns:
        the records, renamed where a (model, task) mixes recipes.
    """
    seen: dict[tuple, set] = {}
    for r, recipe in zip(records, recipes):
        seen.setdefault((r["model"], r["task"]), set()).add(recipe)
    mixed = {k for k, v in seen.items() if len(v) > 1}
    if not mixed:
        return list(records)
    for model, task in sorted(mixed, key=str):
        logging.getLogger(__name__).warning(
            "report: %s on %s was run with %d recipes; one row each (%s@<recipe>)", model, task,
            len(seen[(model, task)]), model)
    return [dict(r, model=f"{r['model']}@{recipe or 'default'}") if (r["model"], r["task"]) in mixed else r
            for r, recipe in zip(records, recipes)]


@dataclass(frozen=True)
class Table3Column:
    """One column of Table 3: its title and which (task, metric) of the records fills it."""

    title: str
    task: str
    metric: str


TABLE3_COLUMNS: tuple[Table3Column, ...] = (
    Table3Column("VQAv2 test-dev", "vqa", "accuracy_test-dev"),
    Table3Column("F30k IR R@1", "retrieval", "ir_r1"),
    Table3Column("F30k TR R@1", "retrieval", "tr_r1"),
    # [ours] the paper gives one RefCOCO+ number without naming the split; testA by default.
    Table3Column("RefCOCO+", "refexp", "accuracy_testA"),
)
"""Default Table 3 columns. Record metric names: ``accuracy_<split>`` for VQA and RefExp,
``ir_r1``/``tr_r1`` (from ``retrieval_recall`` on the test split) for Flickr30k."""


@dataclass(frozen=True)
class PaperRow:
    """One model's row of the paper's Table 3: (mean, std) per column title."""

    name: str
    group: str
    params: str
    values: Mapping[str, tuple[float, float]]


def _paper_row(row: Table3Row) -> PaperRow:
    values = (row.vqa_test_dev, row.f30k_ir_r1, row.f30k_tr_r1, row.refcoco_plus)  # TABLE3_COLUMNS' order
    return PaperRow(row.name, row.group, f"{row.params_m:.1f}M", dict(zip((c.title for c in TABLE3_COLUMNS), values)))


PAPER_TABLE3: dict[str, PaperRow] = {key: _paper_row(row) for key, row in TABLE3.items()}
"""The paper's Table 3 (``switchbert.paper.TABLE3``) by canonical model name (see canonical_model_name)."""

_ALIASES = {
    "switchbertnopretraining": "switchbertnopretrain",
    "switchbertnopt": "switchbertnopretrain",
    "switchbertscratch": "switchbertnopretrain",
}

# A default record name may end with a 6-hex hash of the model section (ExperimentConfig.report_name),
# and `switchbert report` adds "@<recipe>" when one model ran one task with several recipes.
_RECIPE_SUFFIX = re.compile(r"-[0-9a-f]{6}$")
_REPORT_SUFFIX = re.compile(r"@[^@]*$")


def canonical_model_name(name: str) -> str:
    """Lower case, letters and digits only, the hash suffixes and common aliases folded:
    "VL-BERT" -> "vlbert", "uniter-3fa2c1" -> "uniter", "uniter@9f8e7d" -> "uniter"."""
    key = re.sub(r"[^a-z0-9]", "", _RECIPE_SUFFIX.sub("", _REPORT_SUFFIX.sub("", name.lower())))
    return _ALIASES.get(key, key)


def _split_of(metric: str) -> Optional[str]:
    return metric.split("_", 1)[1] if metric.startswith("accuracy_") else None


def default_columns(summaries: Mapping[SummaryKey, RunSummary]) -> tuple[Table3Column, ...]:
    """Table 3's columns, each on a split the records have.

    VQAv2 test-dev accuracy comes only from the evaluation server, so records usually hold
    ``accuracy_val`` (or ``accuracy_minival``): a default column whose (task, metric) no record has takes
    the first split of the same task that records do have (VQA: test-std, minival, val, train; RefCOCO+:
    testB, val), and its title names that split ("VQAv2 val"). Columns with records stay as they are.
    """
    have = {(task, metric) for _, task, metric in summaries}
    fallbacks = {"vqa": ("test-std", "minival", "val", "train"), "refexp": ("testB", "val")}
    out = []
    for c in TABLE3_COLUMNS:
        if (c.task, c.metric) not in have:
            for split in fallbacks.get(c.task, ()):
                if (c.task, f"accuracy_{split}") in have:
                    stem = c.title.split(" ")[0]
                    c = Table3Column(f"{stem} {split}", c.task, f"accuracy_{split}")
                    break
        out.append(c)
    return tuple(out)


def _paper_cell(paper: PaperRow, column: Table3Column) -> str:
    """The paper's number for ``column``: the same (task, metric), or for an accuracy on another split
    the paper's split named beside it ("68.8 ± 0.4 (test-dev)"); "–" when the paper has none."""
    for d in TABLE3_COLUMNS:
        if d.task != column.task:
            continue
        ref = paper.values.get(d.title)
        if ref is None:
            continue
        if d.metric == column.metric:
            return f"{ref[0]:g} ± {ref[1]:g}"
        if _split_of(d.metric) is not None and _split_of(column.metric) is not None:
            return f"{ref[0]:g} ± {ref[1]:g} ({_split_of(d.metric)})"
    return "–"


def _fmt_ours(s: Optional[RunSummary], decimals: int) -> str:
    if s is None:
        return "–"
    if s.n == 1:
        return f"{s.mean:.{decimals}f} (n=1)"
    return f"{s.mean:.{decimals}f} ± {s.std:.{decimals + 1}f} (n={s.n})"


def format_table3(
    summaries: Mapping[SummaryKey, RunSummary],
    columns: Optional[Sequence[Table3Column]] = None,
    include_paper: bool = True,
    decimals: int = 1,
) -> str:
    """Markdown table in the layout of the paper's Table 3.

    Rows are the models found in ``summaries``: the paper's models first in the paper's order, any
    other model after them, alphabetically. With ``include_paper``, each model the paper reports is
    followed by a "paper" row with its published mean ± std, and the paper's other models follow at the
    end, so the paper's whole Table 3 is always beside the user's rows.

    Args:
        summaries: output of ``aggregate_runs``.
        columns: which (task, metric) fills each column (default: :func:`default_columns`).
        include_paper: add the paper's numbers beside ours.
        decimals: decimals of the means (stds get one more).

    Returns:
        the table, ending with a line saying how ± is computed.
    """
    if not summaries:
        raise ValueError("format_table3: no results to tabulate")
    if columns is None:
        columns = default_columns(summaries)
    models = list(dict.fromkeys(key[0] for key in summaries))
    paper_order = list(PAPER_TABLE3)
    known = sorted((m for m in models if canonical_model_name(m) in PAPER_TABLE3),
                   key=lambda m: paper_order.index(canonical_model_name(m)))
    others = sorted(m for m in models if canonical_model_name(m) not in PAPER_TABLE3)

    header = ["Model", "Source", *[c.title for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    shown: set[str] = set()

    def paper_line(key: str) -> str:
        paper = PAPER_TABLE3[key]
        shown.add(key)
        return "| " + " | ".join([paper.name, "paper", *[_paper_cell(paper, c) for c in columns]]) + " |"

    for model in known + others:
        key = canonical_model_name(model)
        paper = PAPER_TABLE3.get(key)
        # Our name as recorded (it carries the recipe hash), with the paper's name when it is one of its models.
        plain = re.sub(r"[^a-z0-9]", "", model.lower()) == key  # "switchbert", "VL-BERT": the paper's name
        display = model if paper is None else (paper.name if plain else f"{paper.name} ({model})")
        cells = [_fmt_ours(summaries.get((model, c.task, c.metric)), decimals) for c in columns]
        lines.append("| " + " | ".join([display, "ours", *cells]) + " |")
        if include_paper and paper is not None and key not in shown:
            lines.append(paper_line(key))
    if include_paper:
        lines += [paper_line(key) for key in PAPER_TABLE3 if key not in shown]
    lines.append("")
    foot = "± is the sample standard deviation (ddof=1) over seeds; n = number of seeds."
    if include_paper:
        foot += (" Paper rows: Switch-BERT (ECCV 2022) Table 3, controlled setting, mean ± std of 3 seeds;"
                 " a number in parentheses names the paper's split where the column is on another one.")
    lines.append(foot)
    return "\n".join(lines)


def has_paper_model(summaries: Mapping[SummaryKey, RunSummary]) -> bool:
    """True when a model of the summaries is one the paper's Table 3 reports (by canonical name)."""
    return any(canonical_model_name(model) in PAPER_TABLE3 for model, _, _ in summaries)


def check_columns(summaries: Mapping[SummaryKey, RunSummary], columns: Sequence[Table3Column]) -> None:
    """Every column's (task, metric) is in the records; else a ``ValueError`` with the close matches.

    A column that no record fills would print as a column of "–", which reads like missing runs."""
    import difflib

    have = sorted({f"{task}:{metric}" for _, task, metric in summaries})
    for c in columns:
        want = f"{c.task}:{c.metric}"
        if want not in have:
            close = difflib.get_close_matches(want, have, n=3, cutoff=0.5)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise ValueError(f"--column {c.title}={want}: no record has task {c.task!r} and metric {c.metric!r}"
                             f"{hint}; the records have: {', '.join(have)}")


def compare_models(summaries: Mapping[SummaryKey, RunSummary], columns: Sequence[Table3Column],
                   decimals: int = 1) -> list[str]:
    """In words, per column: is the best model ahead of each other one beyond the seeds' spread?

    "Beyond the spread" means the means differ by more than the two sample standard deviations added
    (as the demo's report judges it). With one seed on either side there is no spread to judge against,
    and the line says so rather than calling a difference.
    """
    lines = []
    for c in columns:
        rows = [s for (m, t, k), s in summaries.items() if t == c.task and k == c.metric]
        if len(rows) < 2:
            continue
        best = max(rows, key=lambda s: s.mean)
        for other in sorted((s for s in rows if s is not best), key=lambda s: -s.mean):
            diff = best.mean - other.mean
            head = (f"{c.title}: {best.model} {best.mean:.{decimals}f} vs {other.model} "
                    f"{other.mean:.{decimals}f} ({diff:+.{decimals}f})")
            if best.n < 2 or other.n < 2:
                lines.append(f"{head}: {min(best.n, other.n)} seed on one side, no spread to judge against")
                continue
            spread = best.std + other.std
            verdict = "beyond" if diff > spread else "within"
            lines.append(f"{head}: {verdict} the spread (std {best.std:.{decimals + 1}f} + "
                         f"{other.std:.{decimals + 1}f})")
    return lines
