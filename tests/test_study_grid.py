"""The study's grids: what they enumerate, and that their projected times fit their budgets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from switchbert.study.grid import (DEFAULT, FULL, MODELS, QUICK, TASKS, Level, StudyGrid, pipeline_stages,
                                   projected_seconds, task_family, task_recipe)


def test_grid_enumeration_counts():
    # 4 models x 3 levels x 3 budgets x 3 seeds pipelines; the table has a cell per model, level, task and budget
    assert len(DEFAULT.pipelines()) == 4 * 3 * 3 * 3 and len(DEFAULT.cells()) == 4 * 3 * 5 * 3
    assert len(QUICK.pipelines()) == 4 * 2 * 1 * 3 and len(QUICK.cells()) == 4 * 2 * 5 * 1
    assert len(FULL.pipelines()) == 4 * 3 * 3 * 5
    # every pipeline distinct, each with its own run directory
    assert len({p.slug for p in DEFAULT.pipelines()}) == len(DEFAULT.pipelines())
    # no pretraining: no pretrain stage; otherwise pretraining first, then every task
    stages = {p.budget: pipeline_stages(DEFAULT, p) for p in DEFAULT.pipelines()}
    assert stages["none"] == TASKS and stages["short"] == ("pretrain",) + TASKS
    assert sum(len(pipeline_stages(DEFAULT, p)) for p in DEFAULT.pipelines()) == 4 * 3 * 3 * (5 + 6 + 6)


def test_every_model_of_a_cell_gets_the_same_steps_and_data():
    for grid in (QUICK, DEFAULT, FULL):
        by_cell: dict = {}
        for p in grid.pipelines(first_seed=7):
            what = (p.pretrain_steps, grid.level_size(p.level, None))
            by_cell.setdefault((p.level, p.budget, p.seed), set()).add(what)
        assert all(len(v) == 1 for v in by_cell.values())
        assert {p.model for p in grid.pipelines()} == set(MODELS)
        assert {p.seed for p in grid.pipelines(first_seed=7)} == set(range(7, 7 + grid.seeds)) and grid.seeds >= 3


def test_tasks_and_families():
    assert TASKS == ("vqa_cross_modal", "vqa_cross_then_intra", "vqa_intra_modal", "retrieval", "refexp")
    assert [task_recipe(t) for t in TASKS] == ["vqa"] * 3 + ["retrieval", "refexp"]
    assert task_family("vqa_intra_modal") == "intra_modal" and task_family("refexp") is None
    assert QUICK.level_size(Level(0.5, 1.0), "intra_modal").question_types == ("count_all", "same_color")
    assert QUICK.level_size(Level(0.5, 1.0), None).abstraction == 0.5


def test_grid_checks_its_fields():
    with pytest.raises(ValueError, match="include UNITER"):
        replace(QUICK, models=("Switch-BERT",))
    with pytest.raises(ValueError, match="unknown tasks"):
        StudyGrid("x", QUICK.size, tasks=("vqa",))


def test_projected_times_fit_the_budgets():
    # from the measured per-stage seconds (demo.progress.stage_weight x the preset's measured cost), 2 jobs
    assert projected_seconds(QUICK, jobs=2) <= 10 * 60
    assert projected_seconds(DEFAULT, jobs=2) <= 90 * 60
    assert projected_seconds(FULL, jobs=2) > projected_seconds(DEFAULT, jobs=2)


def test_demo_report_names_its_regime_and_points_to_the_study():
    from switchbert.demo.report import regime_note

    aligned = regime_note({"abstraction": 0.0, "clutter": 0.0})
    assert "*aligned*" in aligned and "predicts no gain" in aligned
    assert "`switchbert study`" in aligned and "docs/study.md" in aligned
    assert "*misaligned*" in regime_note({"abstraction": 0.5, "clutter": 1.0})
