"""Route reports: ``routes.md``, ``routes.json`` and the PNG figures for one or several tasks.

    write_report(out_dir, {"refexp": stats, "retrieval": stats2}, epochs=20)

writes, for every task, the route tables and figures (``{task}_route.png``, ``{task}_modes.png``,
``{task}_sib.png``) and a FLOPs table: per-sample forward FLOPs along the measured routes (both notions,
see ``analysis.flops``) beside the fixed baselines on the same samples, and, with ``samples``/``epochs``,
Table-7-style totals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from switchbert.config import ModelConfig

from switchbert.analysis.flops import RunFlops, flops_over_run
from switchbert.analysis.plots import plot_report_figures
from switchbert.analysis.routes import RouteStats


@dataclass
class ReportFiles:
    """What ``write_report`` wrote.

    Attributes:
        markdown: ``routes.md``.
        json: ``routes.json``.
        figures: every PNG, by task.
    """

    markdown: Path
    json: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)


def write_report(
    out_dir: str | Path,
    stats: Mapping[str, RouteStats],
    config: Optional[ModelConfig] = None,
    samples: Optional[Mapping[str, int]] = None,
    epochs: float = 1.0,
    figures: bool = True,
) -> ReportFiles:
    """Writes the report of ``stats`` (task -> statistics) into ``out_dir``.

    Args:
        out_dir: created if missing; existing report files are replaced.
        stats: one ``RouteStats`` per task (from ``collect_routes``).
        config: the model's config, for the FLOPs table (baselines at its sizes); without it, no FLOPs.
        samples: training samples per epoch per task: adds training totals (x epochs, x 3 for
            forward + backward) along the measured routes; default: forward FLOPs of the analysed samples.
        epochs: training epochs for those totals.
        figures: also draw the PNGs.

    Returns:
        The paths written.
    """
    if not stats:
        raise ValueError("write_report: no task statistics to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "routes.md", out / "routes.json")
    flops: dict[str, RunFlops] = {}
    if config is not None:
        for task, s in stats.items():
            if s.flops is not None and s.flops.num_samples:
                n = (samples or {}).get(task)
                # Measured routes are inference routes: a forward count unless training totals are asked for.
                passes = 3.0 if n is not None else 1.0
                flops[task] = flops_over_run(s, config, samples=n, epochs=epochs if n is not None else 1.0,
                                             passes=passes)
    first = next(iter(stats.values()))
    lines = [f"# Route analysis: {first.model}", ""]
    lines += [_summary_table(stats), ""]
    for task, s in stats.items():
        lines += [s.to_markdown(heading_level=2)]
        if figures:
            paths = plot_report_figures(s, out, _slug(task))
            files.figures[task] = paths
            lines += [f"![{p.stem}]({p.name})" for p in paths] + [""]
        if task in flops:
            lines += ["### FLOPs along these routes beside the fixed baselines (Table 7 style)", "",
                      flops[task].to_markdown(), ""]
    files.markdown.write_text("\n".join(lines))
    payload = {
        "format": "switchbert-route-report/1",
        "model": first.model,
        "tasks": {task: s.to_dict() for task, s in stats.items()},
        "flops": {task: f.to_dict() for task, f in flops.items()},
        "figures": {task: [p.name for p in paths] for task, paths in files.figures.items()},
    }
    files.json.write_text(json.dumps(payload, indent=2))
    return files


def _summary_table(stats: Mapping[str, RouteStats]) -> str:
    """One line per task: samples, distinct architectures, the top architecture's share (paper Fig. 4), and
    how many switchers are near-ties (``routes.NEAR_TIE_MARGIN``): an architecture made of near-ties is an
    argmax over almost equal probabilities, and the table says so."""
    lines = ["| task | samples | distinct architectures | most frequent architecture | share | near-tie switchers |",
             "|---|---:|---:|---|---:|---|"]
    notes = []
    for task, s in stats.items():
        top = s.top_architectures[0] if s.top_architectures else None
        sig = f"`{top.signature}`" if top is not None and top.layers else "(fixed)"
        share = f"{top.share:.2%}" if top is not None else "-"
        switchers, ties = s.switcher_confidence(), s.near_ties()
        tie_cell = f"{len(ties)} of {len(switchers)}" if switchers else "-"
        if switchers and len(ties) == len(switchers):
            tie_cell += " (undecided)"
            notes.append(task)
        lines.append(f"| {task} | {s.num_samples:,} | {s.num_architectures:,} | {sig} | {share} | {tie_cell} |")
    if notes:
        lines += ["", f"Undecided ({', '.join(notes)}): every switcher is a near-tie, so the most frequent "
                  "architecture there is an argmax over almost equal probabilities, not a route the model chose."]
    return "\n".join(lines)


def routes_section_markdown(stats: Mapping[str, RouteStats], figures: Optional[Mapping[str, list[Path]]] = None,
                            figure_prefix: str = "", heading_level: int = 3) -> str:
    """The routes section of a larger report (the demo's): per task, the summary with switcher confidence
    in words (``RouteStats.summary_markdown``) and the task's figures.

    Args:
        stats: task -> statistics.
        figures: task -> PNG paths (``ReportFiles.figures``), linked as ``figure_prefix + name``.
        figure_prefix: e.g. ``"routes/"`` when the report sits one directory above the figures.
        heading_level: of each task's heading.
    """
    h = "#" * heading_level
    lines = []
    for task, s in stats.items():
        lines += [f"{h} {task}", "", s.summary_markdown()]
        lines += [f"![{p.stem}]({figure_prefix}{p.name})\n" for p in (figures or {}).get(task, [])]
    return "\n".join(lines)


def _slug(task: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task) or "task"


def load_report(path: str | Path) -> dict[str, RouteStats]:
    """Reads the task statistics back from a ``routes.json`` written by ``write_report``."""
    raw = json.loads(Path(path).read_text())
    if raw.get("format") != "switchbert-route-report/1":
        raise ValueError(f"{path}: not a switchbert route report (format {raw.get('format')!r})")
    return {task: RouteStats.from_dict(d) for task, d in raw["tasks"].items()}
