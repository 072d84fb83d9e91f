"""`switchbert demo` end to end at its tiny size: every stage runs and the report has every section."""

from __future__ import annotations

import re

import pytest

import torch

from switchbert.cli import main
from switchbert.demo import SIZES, ensure_data


def test_tiny_demo_writes_a_complete_report(tmp_path, capsys):
    assert main(["demo", "--size", "tiny", "--out", str(tmp_path), "--no-progress", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'report.md'}" in out
    # progress: every stage announced with the overall share and a time estimate
    # (with parallel jobs the two first pipelines may announce themselves in either order)
    assert re.search(r"\[demo [12]/17 +\d+%\] Switch-BERT seed 0: pretraining", out) and "left)" in out
    assert "UNITER seed 1: fine-tuning and evaluating refexp" in out
    report = (tmp_path / "report.md").read_text()
    for section in ("## Results", "## Routes Switch-BERT learned", "## FLOPs", "## Run", "What these numbers are",
                    "What they are not", "synthetic"):
        assert section in report, section
    # one results row per model, with a number in every task column
    for model in ("Switch-BERT", "UNITER"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {model} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 5 and all(re.fullmatch(r"\d+\.\d ± \d+\.\d", c) for c in cells), row
    # the verdict over seeds, in words, for every headline column
    assert report.count("- **") >= 5 and ("spread" in report)
    for seed in (0, 1):
        assert (tmp_path / "runs" / "uniter" / f"seed{seed}" / "vqa").is_dir()
    # The collapse to chance the demo's recipe fixed (docs/training.md): the fused vector dead and the four retrieval candidates tied (loss at
    # ln 4 to four digits). With the small-model init the test pairs' scores must differ: tied scores
    # measured 2.5e-4 (BERT's init at this width), the recipe gives 6e-3. That the recipe *learns*
    # retrieval is tests/test_demo_retrieval_learns.py.
    scores = torch.load(tmp_path / "runs" / "switchbert" / "seed0" / "retrieval" / "eval" / "retrieval_scores_test.pt")
    assert float(scores.std()) > 2e-3, float(scores.std())
    chance = next(line for line in report.splitlines() if line.startswith("| *chance"))
    assert chance.count("|") == 7
    # VQA per question type, beside each type's text-only prior
    assert "VQA by question type" in report and "| *text-only prior* |" in report
    header = next(line for line in report.splitlines() if line.startswith("| model | color_of_shape"))
    assert "exist" in header
    # route figures exist and are linked
    for task in ("vqa", "retrieval", "refexp"):
        assert f"### {task}" in report
        png = tmp_path / "routes" / f"{task}_route.png"
        assert png.is_file() and png.stat().st_size > 1000
        assert f"routes/{task}_route.png" in report
    assert "| UNITER | fixed |" in report
    # how sure the switchers are, per task, in words (a near-tie route must not read like a finding)
    assert report.count("How sure the switchers are") == 3 and "| L1 | SAB |" in report
    assert "near-tie" in report or "are decided" in report
    assert (tmp_path / "routes" / "vqa_dynamics_sab.png").stat().st_size > 1000
    assert "routes/vqa_dynamics_sab.png" in report
    # the data are cached: asking again for the same data does not regenerate them
    manifest = tmp_path / "data" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    ensure_data(tmp_path / "data", SIZES["tiny"], seed=0)
    assert manifest.stat().st_mtime_ns == before


def test_a_second_demo_into_the_same_directory_is_refused(tmp_path):
    # The demo clears runs/<model> before training it and caches data/ under --out: a second demo
    # into the same directory would delete the first one's runs mid-stage.
    from switchbert.demo import run_demo
    from switchbert.train.rundir import RunLock, RunLockedError

    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="in use by another run"):
            run_demo(tmp_path, "tiny", progress=False)
    assert not (tmp_path / "data").exists()


def test_cached_data_of_another_question_mix_are_regenerated(tmp_path):
    import dataclasses
    import json

    ensure_data(tmp_path / "data", SIZES["tiny"], seed=0)
    family = dataclasses.replace(SIZES["tiny"], question_types=("color_of_shape", "exist"))
    ensure_data(tmp_path / "data", family, seed=0)
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert set(manifest["stats"]["question_types"]) == {"color_of_shape", "exist"}


def test_parallel_pipelines_give_the_numbers_of_one_process(tmp_path):
    """``--jobs 2`` runs each (model, seed) in a spawned process; with one thread everywhere the
    metrics are those of running them one after another in this process, to the last digit."""
    from switchbert import demo

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers get their share of it: one thread each
    try:
        lines: list[str] = []
        parallel = demo.run_demo(tmp_path / "par", "tiny", progress=False, jobs=2, echo=lines.append)
        serial = demo.run_demo(tmp_path / "one", "tiny", progress=False, jobs=1, echo=lambda line: None)
    finally:
        torch.set_num_threads(previous)
    assert (parallel.jobs, serial.jobs) == (2, 1)
    assert any("2 (model, seed) pipelines, 2 at a time in parallel processes" in line for line in lines)
    # every stage announced once, numbered in the order they started
    stages = [line for line in lines if re.match(r"\[demo \d+/9 ", line)]
    assert [int(re.match(r"\[demo (\d+)/", line).group(1)) for line in stages] == list(range(1, 10))
    assert len({line.split("] ", 1)[1].split(" (elapsed")[0] for line in stages}) == 9
    assert parallel.per_seed == serial.per_seed


def test_a_failing_parallel_pipeline_raises_its_error_here(tmp_path):
    import dataclasses

    from switchbert.demo import Cell, run_parallel
    from switchbert.train.config import ConfigError

    size = dataclasses.replace(SIZES["tiny"], preset="no-such-size")
    broken = Cell("Switch-BERT", {}, size, tmp_path / "data", tmp_path / "runs", seed=0)
    with pytest.raises(ConfigError, match="no-such-size"):
        run_parallel([broken], {}, lambda i, event, k: None, jobs=1)
