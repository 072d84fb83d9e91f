"""`switchbert study` end to end on a micro grid, and its resume: an interrupted study continues where it
stopped, skips the finished stages and gives the same table."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from switchbert.cli import main
from switchbert.demo import pipeline
from switchbert.study import QUICK, Level, run_study

MICRO = replace(QUICK, name="micro",
                size=replace(QUICK.size, images=40, max_steps=2, task_steps=(), retrieval_val_images=4),
                models=("UNITER", "Switch-BERT"), levels=(Level(0.0, 0.0),), budgets=(("short", 1),), seeds=2,
                tasks=("vqa_intra_modal",), route_samples=8)
STAGES_PER_PIPELINE = 2  # pretrain, vqa_intra_modal


def _table(report: str) -> str:
    return report[report.index("## Results"):report.index("## Switch-BERT's routes")]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """The micro grid run once, uninterrupted, through the command (``--quick`` pointed at it)."""
    import contextlib
    from io import StringIO

    from switchbert.commands import study as command

    out, printed = tmp_path_factory.mktemp("study"), StringIO()
    saved, command.GRIDS["quick"] = command.GRIDS["quick"], MICRO
    try:
        with contextlib.redirect_stdout(printed):
            assert main(["study", "--quick", "--out", str(out), "--jobs", "1"]) == 0
    finally:
        command.GRIDS["quick"] = saved
    return out, printed.getvalue()


def test_command_end_to_end(study_dir):
    out, printed = study_dir
    assert "projected" in printed and f"report: {out / 'report.md'}" in printed and "gains.png" in printed
    report = (out / "report.md").read_text()
    for section in ("## Results", "## Switch-BERT's routes", "## Run", "95% t-interval", "UNITER"):
        assert section in report, section
    assert (out / "gains.png").stat().st_size > 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2  # models x seeds (one task)
    assert all(r["value"] is not None for r in records)
    routes = json.loads((out / "routes.json").read_text())
    assert len(routes) == 2  # Switch-BERT's seeds
    assert all(s["std_p"] and len(s["std_p"]) == s["options"] for r in routes for s in r["switchers"])
    # the VQA families share the pretraining, so one pretraining per pipeline and each family's own questions
    run = out / "runs" / "a0-c0" / "short" / "switchbert" / "seed0"
    assert sorted(p.name for p in run.iterdir()) == ["pretrain", "vqa_intra_modal"]
    cfg = json.loads((run / "vqa_intra_modal" / pipeline.STAGE_FILE).read_text())["config"]
    assert cfg["data"]["root"].endswith("intra_modal") and cfg["model"]["init_from"] == str(run / "pretrain")


def test_an_interrupted_study_resumes_and_gives_the_same_table(study_dir, tmp_path, monkeypatch):
    out, _ = study_dir
    real, calls = pipeline.run_stage, []

    def failing(config):
        calls.append(config.output_dir)
        if len(calls) == 4:  # the second pipeline fails after its pretraining
            raise RuntimeError("interrupted")
        return real(config)

    monkeypatch.setattr(pipeline, "run_stage", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_study(tmp_path, MICRO, jobs=1, echo=lambda line: None)
    calls.clear()
    monkeypatch.setattr(pipeline, "run_stage", lambda config: calls.append(config.output_dir) or real(config))
    lines: list[str] = []
    run_study(tmp_path, MICRO, jobs=1, echo=lines.append)
    # the three finished stages were skipped; the rest ran once
    assert len(calls) == 4 * STAGES_PER_PIPELINE - 3
    assert any("left)" in line for line in lines)  # progress with the time left
    assert _table((tmp_path / "report.md").read_text()) == _table((out / "report.md").read_text())
    # a third run trains nothing
    calls.clear()
    run_study(tmp_path, MICRO, jobs=1, echo=lambda line: None)
    assert calls == []


def test_families_share_a_pretraining_only_with_identical_non_question_files(tmp_path):
    import shutil

    from switchbert.study.grid import VQA_FAMILIES
    from switchbert.study.runner import prepare_data

    grid = replace(MICRO, tasks=tuple(f"vqa_{f}" for f in VQA_FAMILIES))
    dirs, _ = prepare_data(tmp_path, grid, MICRO.levels[0], data_seed=0)
    assert sorted(dirs) == sorted(VQA_FAMILIES)
    questions = [(d / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text() for d in dirs.values()]
    assert len(set(questions)) == 3  # each family its own questions
    captions = dirs["intra_modal"] / "cc" / "caption_train.json"
    shutil.copy(dirs["intra_modal"] / "cc" / "caption_valid.json", captions)  # a caption file that differs
    with pytest.raises(RuntimeError, match="cc_train.*differs"):
        prepare_data(tmp_path, grid, MICRO.levels[0], data_seed=0)
