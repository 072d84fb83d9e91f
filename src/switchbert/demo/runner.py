"""The whole demo: data, every (model, seed) pipeline (in parallel processes when ``jobs`` > 1), the route
analysis and the report, with a progress line per stage."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

from switchbert.demo.analysis import analyse_routes
from switchbert.demo.parallel import default_jobs, run_parallel
from switchbert.demo.pipeline import Cell, CellResult, ensure_data, minilm_dir, run_cell
from switchbert.demo.progress import ANALYSIS_SECONDS, Progress, duration, stage_weight
from switchbert.demo.report import DemoResult, write_report
from switchbert.demo.sizes import MODELS, SIZES, STAGES, run_slug
from switchbert.train.rundir import RunLock

log = logging.getLogger(__name__)


def run_demo(out_dir: Path, size_name: str = "default", seed: int = 0, bert_dir: Optional[Path] = None,
             use_bert: Optional[bool] = None, progress: bool = True, seeds: Optional[int] = None,
             echo: Callable[[str], Any] = print, jobs: Optional[int] = None,
             clock: Callable[[], float] = time.perf_counter) -> DemoResult:
    """Runs the demo; returns where the report is and every metric.

    Each model is trained ``seeds`` times (seeds ``seed``, ``seed + 1``, ...; default: the size's
    ``seeds``) on the same data; the report gives mean ± std over them. ``echo`` receives the
    progress lines, timed by ``clock``. ``jobs`` (default: ``default_jobs``) trains that many
    (model, seed) pipelines at once, each in its own process with an equal share of this process's
    threads. Those processes are spawned (they import the calling script as a module), so a script
    that calls ``run_demo`` with more than one job must do it under ``if __name__ == "__main__":``,
    as for any multiprocessing.
    """
    size = SIZES[size_name]
    n_seeds = size.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {n_seeds}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    seed_list = [seed + k for k in range(n_seeds)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One demo per output directory: a second one would regenerate the data and delete the runs
    # under the first one's feet (runs/<model> is cleared before the models train).
    with RunLock(out_dir):
        return _run_locked(out_dir, size_name, seed_list, bert_dir, use_bert, progress, echo,
                           jobs or default_jobs(len(MODELS) * n_seeds), clock)


def _run_locked(out_dir: Path, size_name: str, seed_list: list[int], bert_dir: Optional[Path],
                use_bert: Optional[bool], progress: bool, echo: Callable[[str], Any], jobs: int,
                clock: Callable[[], float]) -> DemoResult:
    size, seed = SIZES[size_name], seed_list[0]
    result = DemoResult(out_dir=out_dir, report=out_dir / "report.md", seeds=seed_list)
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    echo(f"[demo] synthetic data ({size.images} images) into {out_dir / 'data'}")
    manifest = ensure_data(out_dir / "data", size, seed)
    result.seconds["data"] = time.perf_counter() - t0

    if use_bert is None:
        use_bert = size.use_bert
    if use_bert and bert_dir is None:
        bert_dir = minilm_dir()
    if not use_bert:
        bert_dir = None
    log.info("initialisation: %s", f"BERT weights from {bert_dir}" if bert_dir else "random (no BERT weights)")

    cells = [Cell(model=name, model_overrides=overrides, size=size, data_dir=out_dir / "data",
                  run_dir=out_dir / "runs" / run_slug(name) / f"seed{s}", seed=s, bert_dir=bert_dir,
                  progress=progress and jobs == 1)  # parallel jobs: the stage lines only
             for name, overrides in MODELS.items() for s in seed_list]
    jobs = min(jobs, len(cells))
    stages: list[tuple[str, float]] = []
    first: list[int] = []  # each cell's first stage in the list
    for cell in cells:
        first.append(len(stages))
        stages.append((f"{cell.model} seed {cell.seed}: pretraining (MLM + MRC-KL + ITM)",
                       stage_weight("pretrain", size, manifest)))
        stages += [(f"{cell.model} seed {cell.seed}: fine-tuning and evaluating {task}",
                    stage_weight(task, size, manifest)) for task in STAGES[1:]]
    stages.append(("analysing Switch-BERT's routes, writing the report", ANALYSIS_SECONDS))
    if jobs > 1:
        echo(f"[demo] {len(cells)} (model, seed) pipelines, {jobs} at a time in parallel processes")
    prog = Progress(stages, echo, workers=jobs, clock=clock,
                    pipelines=[list(range(f, f + len(STAGES))) for f in first])

    for model_name in MODELS:  # the demo's own earlier runs: retrain rather than mix old and new
        old = out_dir / "runs" / run_slug(model_name)
        if old.exists():
            shutil.rmtree(old)
    def on_event(i: int, event: str, k: int) -> None:  # stage k of cell i
        prog.event(event, first[i] + k)

    done: list[CellResult]
    if jobs == 1:
        done = [run_cell(cell, manifest, lambda event, k, i=i: on_event(i, event, k)) for i, cell in enumerate(cells)]
    else:
        done = run_parallel(cells, manifest, on_event, jobs)
    for model_name in MODELS:
        mine = [(cell, res) for cell, res in zip(cells, done) if cell.model == model_name]
        result.per_seed[model_name] = [res.metrics for _, res in mine]
        result.metrics[model_name] = result.per_seed[model_name][0]
        result.seconds[model_name] = sum(res.seconds for _, res in mine)
        result.vqa_by_type[model_name] = [
            json.loads(path.read_text()).get("perQuestionType", {}) if path.is_file() else {}
            for path in (cell.run_dir / "vqa" / "eval" / "vqa_accuracy_val.json" for cell, _ in mine)]
    result.jobs = jobs

    prog.start(len(stages) - 1)  # by index: parallel stages may have started in any order
    t0 = time.perf_counter()
    route_md, flops_md = analyse_routes(out_dir, cells[0].run_dir, out_dir / "data", size.route_samples)
    result.seconds["analysis"] = time.perf_counter() - t0
    result.seconds["total"] = time.perf_counter() - t_all
    write_report(result, size_name, size, bert_dir, manifest, route_md, flops_md)
    prog.finish(len(stages) - 1)
    echo(f"[demo 100%] done in {duration(result.seconds['total'])}")
    return result
