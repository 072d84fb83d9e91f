"""``switchbert study``: does switching help, and when? A controlled test of the paper's hypothesis on
the synthetic benchmark (docs/study.md).

Models {UNITER, SAB-only, SIB-only, Switch-BERT} crossed with modality misalignment (the benchmark's
``abstraction`` and ``clutter``), task families (three VQA families, retrieval, RefExp) and pretraining
budget, over several seeds, at equal optimiser steps and data per cell; each switching model compared
with UNITER seed by seed.

    grid     StudyGrid, Level, Pipeline, QUICK / DEFAULT / FULL, projected_seconds: what runs, how big
    stats    paired, Paired, t975: per-seed differences, 95% t-interval, beats / trails / no difference shown
    routes   analyse_stage: routes, switcher confidence and per-sample spread of p of one trained stage
    runner   run_study: data, every pipeline (resumable, parallel), routes, report
    report   the markdown report, results.jsonl, routes.json and the gains figure

Each pipeline is a demo cell (``switchbert.demo.pipeline``): the same recipes, resume and parallel
machinery as ``switchbert demo``.
"""

from switchbert.study.grid import (DEFAULT, FULL, GRIDS, MODELS, QUICK, REFERENCE, TASKS, Level, Pipeline, StudyGrid,
                                   projected_seconds)
from switchbert.study.runner import Record, StudyResult, run_study
from switchbert.study.stats import Paired, paired, t975

__all__ = ["DEFAULT", "FULL", "GRIDS", "Level", "MODELS", "Paired", "Pipeline", "QUICK", "REFERENCE", "Record",
           "StudyGrid", "StudyResult", "TASKS", "paired", "projected_seconds", "run_study", "t975"]
