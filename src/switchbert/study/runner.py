"""Runs a study: its data, every pipeline (resumable, in parallel processes when ``jobs`` > 1), the
route analysis of the switching models, and the report.

Every pipeline is a demo :class:`~switchbert.demo.pipeline.Cell` run with ``resume=True``: a stage whose
run directory holds a finished, evaluated run of the same config is skipped, so an interrupted study
(Ctrl-C, a crash, a closed laptop) continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from switchbert.demo.parallel import run_parallel
from switchbert.demo.pipeline import Cell, CellResult, ensure_data, run_cell
from switchbert.demo.progress import ANALYSIS_SECONDS, Progress, duration
from switchbert.study.grid import (HEADLINE, MODELS, Level, Pipeline, StudyGrid, pipeline_stages, stage_seconds,
                                   task_family, task_recipe)
from switchbert.train.rundir import RunLock

log = logging.getLogger(__name__)

ROUTE_SECONDS = 0.5
"""Seconds to analyse one stage's routes (a few hundred held-out samples; measured on the quick grid)."""

SHARED_FILES: tuple[str, ...] = ("cc_train", "cc_valid", "flickr_train", "flickr_val", "flickr_test", "refcoco_refs",
                                 "refcoco_instances")
"""Manifest keys whose files must be identical across a level's VQA families for them to share one
pretraining (and one retrieval / RefExp fine-tuning)."""

@dataclass
class Record:
    """One (pipeline, task) result: the task's headline value in %."""

    model: str
    level: str
    misalignment: float
    budget: str
    seed: int
    task: str
    value: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class StudyResult:
    """What a study produced."""

    out_dir: Path
    report: Path
    figure: Optional[Path]
    records: list[Record] = field(default_factory=list)
    # (level name, budget, seed, task) -> route analysis of that Switch-BERT pipeline's stage
    routes: dict[tuple[str, str, int, str], dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # stage -> the seconds each pipeline's run of it took (from its run directory: also those of earlier,
    # resumed invocations)
    stage_seconds: dict[str, list[float]] = field(default_factory=dict)


def stage_times(cell: Cell) -> dict[str, float]:
    """The seconds each finished stage of ``cell`` took, as its run directory recorded them."""
    import json

    from switchbert.demo.pipeline import STAGE_FILE

    out = {}
    for stage in cell.stages:
        path = cell.run_dir / stage / STAGE_FILE
        if path.is_file():
            seconds = json.loads(path.read_text()).get("seconds")
            if seconds is not None:
                out[stage] = float(seconds)
    return out


def _digest(path: Path) -> str:
    """A file's bytes, or for the feature store its records (an LMDB file's bytes vary between identical
    writes: its page layout is not deterministic)."""
    h = hashlib.sha256()
    if path.is_dir():
        import dataclasses

        import numpy as np

        from switchbert.data.features import open_feature_store

        store = open_feature_store(path)
        try:
            for image_id in store.ids():
                record = store.get(image_id)
                h.update(image_id.encode())
                for f in dataclasses.fields(record):
                    v = getattr(record, f.name)
                    h.update(np.ascontiguousarray(v).tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
        finally:
            store.close()
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def prepare_data(out_dir: Path, grid: StudyGrid, level: Level, data_seed: int) -> tuple[dict[str, Path], dict]:
    """Generates (or finds cached) one data directory per VQA family of ``level``; checks that they differ
    in their questions only (``SHARED_FILES`` and the region features byte-identical), so one pretraining
    serves all of them. Returns ({family: directory}, the first family's manifest)."""
    dirs: dict[str, Path] = {}
    manifests: dict[str, dict] = {}
    for family in grid.families():
        d = out_dir / "data" / level.name / family
        manifests[family] = ensure_data(d, grid.level_size(level, family), data_seed)
        dirs[family] = d
    first = next(iter(dirs))
    for family, d in dirs.items():
        for key in SHARED_FILES + ("features",):
            a, b = dirs[first] / manifests[first][key], d / manifests[family][key]
            if _digest(a) != _digest(b):
                raise RuntimeError(f"{d}: {key} ({b}) differs from {a}; the VQA families of a level must differ "
                                   "in their questions only to share one pretraining")
    return dirs, manifests[first]


def pipeline_cell(grid: StudyGrid, p: Pipeline, out_dir: Path, dirs: dict[str, Path], progress: bool = False) -> Cell:
    """The demo cell that runs pipeline ``p``: its stages, each task's recipe and data, the budget's steps."""
    stages = pipeline_stages(grid, p)
    primary = next(iter(dirs.values()))
    return Cell(model=p.model, model_overrides=MODELS[p.model], size=grid.level_size(p.level, None),
                data_dir=primary, run_dir=out_dir / "runs" / p.slug, seed=p.seed, progress=progress,
                stages=stages, stage_recipes={t: task_recipe(t) for t in stages},
                stage_data={t: dirs[task_family(t)] for t in stages if task_family(t)},
                stage_overrides={"pretrain": {"train.max_steps": p.pretrain_steps}} if p.pretrain_steps else {})


def run_study(out_dir: Path, grid: StudyGrid, jobs: int = 1, seed: int = 0, data_seed: int = 0,
              echo: Callable[[str], Any] = print, clock: Callable[[], float] = time.perf_counter) -> StudyResult:
    """Runs (or resumes) ``grid`` under ``out_dir``; writes ``out_dir/report.md`` and the figure.

    Args:
        jobs: pipelines trained at once, each in its own spawned process (call under
            ``if __name__ == "__main__":`` from a script when > 1).
        seed: the first training seed (seeds ``seed`` .. ``seed + grid.seeds - 1``).
        data_seed: the synthetic benchmark's seed (every level and family).
        echo, clock: progress lines and their clock (a test passes its own).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    with RunLock(out_dir):
        return _run_locked(out_dir, grid, jobs, seed, data_seed, echo, clock)


def _run_locked(out_dir: Path, grid: StudyGrid, jobs: int, seed: int, data_seed: int,
                echo: Callable[[str], Any], clock: Callable[[], float]) -> StudyResult:
    from switchbert.study.report import write_report

    t_all = clock()
    result = StudyResult(out_dir=out_dir, report=out_dir / "report.md", figure=None)
    data: dict[str, tuple[dict[str, Path], dict]] = {}
    for level in grid.levels:
        echo(f"[study] synthetic data, {level.name} ({grid.size.images} images x {len(grid.families())} VQA families)")
        data[level.name] = prepare_data(out_dir, grid, level, data_seed)
    result.seconds["data"] = clock() - t_all

    pipelines = grid.pipelines(seed)
    cells = [pipeline_cell(grid, p, out_dir, data[p.level.name][0]) for p in pipelines]
    stages: list[tuple[str, float]] = []
    first: list[int] = []
    for p, cell in zip(pipelines, cells):
        first.append(len(stages))
        manifest = data[p.level.name][1]
        stages += [(f"{p.slug}: {stage}", stage_seconds(grid, p, stage, manifest)) for stage in cell.stages]
    analysed = sum(p.model == "Switch-BERT" for p in pipelines) * len(grid.tasks)
    stages.append(("route analysis and report", ANALYSIS_SECONDS + ROUTE_SECONDS * analysed))
    jobs = min(jobs, len(cells))
    echo(f"[study] grid {grid.name}: {len(cells)} pipelines, {len(stages) - 1} stages, {jobs} at a time; "
         "finished stages are skipped")
    prog = Progress(stages, echo, workers=jobs, clock=clock, label="study",
                    pipelines=[list(range(f, f + len(c.stages))) for f, c in zip(first, cells)])

    def on_event(i: int, event: str, k: int) -> None:
        prog.event(event, first[i] + k)

    t0 = clock()
    done: list[CellResult]
    if jobs == 1:
        done = [run_cell(cell, data[p.level.name][1], lambda event, k, i=i: on_event(i, event, k), resume=True)
                for i, (p, cell) in enumerate(zip(pipelines, cells))]
    else:
        # One manifest for every cell: a stage reads only its file paths from it, and those are the same
        # relative paths in every data directory (``synth.MANIFEST_PATHS``; data.root is the cell's).
        done = run_parallel(cells, data[pipelines[0].level.name][1], on_event, jobs, resume=True)
    result.seconds["pipelines"] = clock() - t0
    for p, cell, res in zip(pipelines, cells, done):
        for task in grid.tasks:
            _, split, metric = HEADLINE[task]
            value = res.metrics.get(task, {}).get(split, {}).get(metric)
            result.records.append(Record(p.model, p.level.name, p.level.misalignment, p.budget, p.seed, task, value))
        result.seconds[p.slug] = res.seconds
        for stage, seconds in stage_times(cell).items():
            result.stage_seconds.setdefault(stage, []).append(seconds)

    prog.start(len(stages) - 1)
    t0 = clock()
    from switchbert.study.routes import analyse_stage

    for p, cell in zip(pipelines, cells):
        if p.model != "Switch-BERT":
            continue
        for task in grid.tasks:
            result.routes[(p.level.name, p.budget, p.seed, task)] = analyse_stage(
                cell.run_dir / task, cell.stage_data.get(task, cell.data_dir), task_recipe(task), grid.route_samples)
    result.seconds["analysis"] = clock() - t0
    result.seconds["total"] = clock() - t_all
    write_report(result, grid, data, seed)
    prog.finish(len(stages) - 1)
    echo(f"[study 100%] done in {duration(result.seconds['total'])}; report: {result.report}")
    return result


__all__ = ["Record", "SHARED_FILES", "StudyResult", "pipeline_cell", "prepare_data", "run_study", "stage_times"]
