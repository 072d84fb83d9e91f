"""The study's report: per cell mean ± std and the paired difference with UNITER (95% t-interval and
verdict), the figure (gain over UNITER against misalignment, one line per task family), and the routes
Switch-BERT learned in each cell with how sure its switchers were and how much p varies across samples.
"""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from pathlib import Path
from typing import Any

from switchbert.study.grid import HEADLINE, REFERENCE, StudyGrid, task_recipe
from switchbert.study.stats import BEATS, NO_DIFFERENCE, TRAILS, Paired, mean_std, paired

Values = dict[tuple[str, str, str, str], dict[int, float]]
"""(model, level, budget, task) -> {seed: value in %}."""


def collect(records: list[Any]) -> Values:
    """The records' values by cell and seed (records without a value are left out)."""
    out: Values = defaultdict(dict)
    for r in records:
        if r.value is not None:
            out[(r.model, r.level, r.budget, r.task)][r.seed] = float(r.value)
    return out


def comparisons(grid: StudyGrid, values: Values) -> dict[tuple[str, str, str, str], Paired]:
    """The paired comparison with UNITER of every other model's cell."""
    out = {}
    for level in grid.levels:
        for budget, _ in grid.budgets:
            for task in grid.tasks:
                ref = values.get((REFERENCE, level.name, budget, task), {})
                for model in grid.models:
                    if model != REFERENCE:
                        out[(model, level.name, budget, task)] = paired(values.get((model, level.name, budget, task),
                                                                                   {}), ref)
    return out


def _ms(v: dict[int, float]) -> str:
    if not v:
        return "-"
    m, s = mean_std(list(v.values()))
    return f"{m:.1f} ± {s:.1f}" if len(v) > 1 else f"{m:.1f}"


def results_table(grid: StudyGrid, values: Values, comp: dict) -> str:
    """One row per (budget, task, level): each model's mean ± std, then each model's paired difference
    with UNITER, its 95% interval and the verdict."""
    others = [m for m in grid.models if m != REFERENCE]
    head = (["budget", "task", "level"] + [f"{m}" for m in grid.models]
            + [f"{m} − {REFERENCE} [95% CI]" for m in others])
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for budget, steps in grid.budgets:
        for task in grid.tasks:
            for level in grid.levels:
                cells = [f"{budget} ({steps})", HEADLINE[task][0], level.name]
                cells += [_ms(values.get((m, level.name, budget, task), {})) for m in grid.models]
                for m in others:
                    c = comp[(m, level.name, budget, task)]
                    word = {BEATS: " **beats**", TRAILS: " **trails**"}.get(c.verdict, "")
                    cells.append(c.to_markdown() + word)
                rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def verdict_summary(grid: StudyGrid, comp: dict) -> str:
    """Per task and model: in how many (level, budget) cells it beats, trails or shows no difference."""
    lines = []
    for task in grid.tasks:
        parts = []
        for m in grid.models:
            if m == REFERENCE:
                continue
            v = [comp[(m, level.name, b, task)].verdict for level in grid.levels for b, _ in grid.budgets]
            parts.append(f"{m} beats UNITER in {v.count(BEATS)}, trails in {v.count(TRAILS)}, no difference shown "
                         f"in {v.count(NO_DIFFERENCE)} of {len(v)} cells")
        lines.append(f"- **{HEADLINE[task][0]}**: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def trend_table(grid: StudyGrid, values: Values) -> str:
    """The hypothesis itself: does a model's gain over UNITER grow from the most aligned level to the most
    misaligned one? Per seed, (model − UNITER) at the last level minus (model − UNITER) at the first, with
    its 95% t-interval; "grows" / "shrinks" only where the interval excludes 0."""
    if len(grid.levels) < 2:
        return "One misalignment level: no trend to measure."
    lo, hi = grid.levels[0].name, grid.levels[-1].name
    others = [m for m in grid.models if m != REFERENCE]
    head = ["budget", "task"] + [f"{m}: gain at {hi} − gain at {lo}" for m in others]
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for budget, steps in grid.budgets:
        for task in grid.tasks:
            cells = [f"{budget} ({steps})", HEADLINE[task][0]]
            for m in others:
                gains = {}
                for level in (lo, hi):
                    mv, rv = values.get((m, level, budget, task), {}), values.get((REFERENCE, level, budget, task), {})
                    gains[level] = {s: mv[s] - rv[s] for s in set(mv) & set(rv)}
                c = paired(gains[hi], gains[lo])
                word = {BEATS: " **grows**", TRAILS: " **shrinks**"}.get(c.verdict, "")
                cells.append(c.to_markdown() + word)
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_gains(grid: StudyGrid, comp: dict, path: Path) -> Path:
    """Gain over UNITER (mean paired difference, 95% interval as error bars) against misalignment, one
    line per task, one panel per (budget, model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [m for m in grid.models if m != REFERENCE]
    fig, axes = plt.subplots(len(grid.budgets), len(others), figsize=(4.2 * len(others), 3.2 * len(grid.budgets)),
                             squeeze=False, sharey=True)
    xs = [level.misalignment for level in grid.levels]
    for r, (budget, steps) in enumerate(grid.budgets):
        for c, model in enumerate(others):
            ax = axes[r][c]
            ax.axhline(0.0, color="black", linewidth=0.8)
            for j, task in enumerate(grid.tasks):
                pts = [comp[(model, level.name, budget, task)] for level in grid.levels]
                ys = [p.mean if p.mean is not None else float("nan") for p in pts]
                err = [p.half_width or 0.0 for p in pts]
                shift = 0.012 * (j - (len(grid.tasks) - 1) / 2)  # side by side, so the intervals stay apart
                ax.errorbar([x + shift for x in xs], ys, yerr=err, marker="o", capsize=3, label=HEADLINE[task][0])
            ax.set_title(f"{model}, pretraining {budget} ({steps} steps)", fontsize=9)
            ax.set_xlabel("misalignment ((abstraction + clutter) / 2)")
            if c == 0:
                ax.set_ylabel(f"gain over {REFERENCE} (points)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def routes_table(grid: StudyGrid, routes: dict[tuple[str, str, int, str], dict[str, Any]]) -> str:
    """Per Switch-BERT cell (level, budget, task), over its seeds: the distinct routes and the most frequent
    route's share, the near-ties in words, the smallest mean margin, and the largest per-sample spread of p
    (std across samples) with its switcher."""
    if not routes:
        return "No Switch-BERT pipeline in this grid."
    rows = ["| level | budget | task | routes (per seed) | top route share (per seed) | near-ties (per seed) | "
            "min mean margin | max std of p across samples |", "|---|---|---|---|---|---|---:|---|"]
    for level in grid.levels:
        for budget, _ in grid.budgets:
            for task in grid.tasks:
                runs = [r for (lv, b, _, t), r in sorted(routes.items()) if (lv, b, t) == (level.name, budget, task)]
                if not runs:
                    continue
                n_sw = [len(r.get("switchers", [])) for r in runs]
                n_tie = [len(r.get("near_ties", [])) for r in runs]
                if all(k == 0 for k in n_tie):
                    words = "none: every switcher decided"
                elif all(k == n for k, n in zip(n_tie, n_sw)):
                    words = "all undecided"
                else:
                    words = ", ".join(f"{k}/{n}" for k, n in zip(n_tie, n_sw)) + " undecided"
                margins = [s["margin"] for r in runs for s in r.get("switchers", []) if s.get("margin") is not None]
                spread = max(((max(s["std_p"]), s["name"]) for r in runs for s in r.get("switchers", [])),
                             default=None)
                shares = ", ".join("-" if r.get("top_share") is None else f"{100 * r['top_share']:.0f}%" for r in runs)
                rows.append(f"| {level.name} | {budget} | {HEADLINE[task][0]} | "
                            f"{', '.join(str(r.get('routes', '-')) for r in runs)} | {shares} | {words} | "
                            f"{'-' if not margins else f'{min(margins):.3f}'} | "
                            f"{'-' if spread is None else f'{spread[0]:.3f} ({spread[1]})'} |")
    return "\n".join(rows)


def stage_seconds_line(stage_seconds: dict[str, list[float]]) -> str:
    """``pretrain 7.2 [3.3-12.0], ...``."""
    return ", ".join(f"{stage} {sum(v) / len(v):.1f} [{min(v):.1f}-{max(v):.1f}]"
                     for stage, v in stage_seconds.items() if v) or "none recorded"


def write_report(result: Any, grid: StudyGrid, data: dict[str, tuple[dict[str, Path], dict]], seed: int) -> None:
    """Writes ``result.report`` (markdown), ``results.jsonl``, ``routes.json`` and ``gains.png`` under the
    study's directory; sets ``result.figure``."""
    import torch

    from switchbert.io import atomic_write_text

    out = result.out_dir
    values = collect(result.records)
    comp = comparisons(grid, values)
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r.to_dict()) + "\n" for r in result.records))
    atomic_write_text(out / "routes.json", json.dumps([{"level": k[0], "budget": k[1], "seed": k[2], "task": k[3], **v}
                                                       for k, v in sorted(result.routes.items())], indent=1))
    result.figure = plot_gains(grid, comp, out / "gains.png")
    size = grid.size
    seeds = list(range(seed, seed + grid.seeds))
    levels = ", ".join(f"`{lv.name}` (abstraction {lv.abstraction:g}, clutter {lv.clutter:g})" for lv in grid.levels)
    budgets = ", ".join(f"{b} ({s} steps)" for b, s in grid.budgets)
    steps = {t: size.steps(task_recipe(t)) for t in grid.tasks}
    text = f"""# switchbert study report: does switching help, and when?

**Grid `{grid.name}`.** Models {", ".join(grid.models)} (`{size.preset}`, random weights); misalignment levels
{levels}; pretraining {budgets}; training seeds {seeds}; {size.images} synthetic scenes per level
(data seed of every level and family: the same). Every model of a cell trains the same optimiser steps
at the same batch on the same data: fine-tuning steps {", ".join(f"{t} {s}" for t, s in steps.items())}.
The claim tested (the paper's): switching helps where text and regions sit at different semantic levels,
i.e. more at higher misalignment. See docs/study.md for what this shows and does not show.

## Results

Each model's headline metric (mean ± sample std over seeds, in %), and each switching model's paired
difference with {REFERENCE} (same seed, same data): mean [95% t-interval]. **beats** / **trails** only
where the interval excludes 0; otherwise no difference is shown.

{results_table(grid, values, comp)}

{verdict_summary(grid, comp)}

**Does the gain grow with misalignment?** (the paper's hypothesis: more gain where the modalities are
further apart). Per seed, the gain over {REFERENCE} at the most misaligned level minus the gain at the
most aligned one, mean [95% t-interval]; **grows** / **shrinks** only where the interval excludes 0.

{trend_table(grid, values)}

![gain over UNITER against misalignment]({result.figure.name})

## Switch-BERT's routes

Hard routes on held-out samples ({grid.route_samples} per task). A near-tie is a switcher whose mean margin
p(top 1) − p(top 2) is below 0.1: its choice is an argmax over almost equal probabilities, not a learnt
preference. The spread is the standard deviation of p across samples (per switcher and option; the
largest shown): near 0 means every sample gets the same p, i.e. a per-dataset route, not a per-sample
one. Every switcher's mean and std of p: `routes.json`.

{routes_table(grid, result.routes)}

## Run

- Wall time (this invocation; stages a resume skipped count ~0): data {result.seconds.get('data', 0):.0f}s,
  pipelines {result.seconds.get('pipelines', 0):.0f}s, route analysis {result.seconds.get('analysis', 0):.0f}s,
  total {result.seconds.get('total', 0):.0f}s.
- Seconds per stage (mean [min-max] over pipelines, as run, with the jobs in parallel):
  {stage_seconds_line(result.stage_seconds)}.
- Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.
- Files: `results.jsonl` (one line per pipeline and task), `routes.json`,
  `runs/<level>/<budget>/<model>/seed<k>/<stage>`, `data/<level>/<family>`.
"""
    atomic_write_text(result.report, text)


__all__ = ["collect", "comparisons", "plot_gains", "results_table", "routes_table", "trend_table", "verdict_summary",
           "write_report"]
