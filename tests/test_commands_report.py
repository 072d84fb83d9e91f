"""``switchbert report`` on a user's own runs: their rows (the paper's on request), a parent directory
searched, an unknown column refused with "did you mean", and each difference judged against the spread."""

from __future__ import annotations

import json

import pytest

from switchbert.cli import main


def _runs(tmp_path):
    for model, values in (("mynet", (60.0, 61.0)), ("uniter-tiny", (50.0, 51.0))):
        for seed, v in enumerate(values):
            run = tmp_path / "runs" / f"{model}-seed{seed}"
            run.mkdir(parents=True)
            rec = {"model": model, "task": "vqa", "metric": "accuracy_val", "seed": seed, "value": v}
            (run / "results.jsonl").write_text(json.dumps(rec) + "\n")
    return tmp_path / "runs"


def test_report_of_own_runs_from_a_parent_directory(tmp_path, capsys):
    assert main(["report", str(_runs(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "| mynet | ours | 60.5" in out and "paper" not in out.split("\n\n")[0].replace("Paper", "")
    assert "VQAv2 val: mynet 60.5 vs uniter-tiny 50.5 (+10.0): beyond the spread" in out
    assert main(["report", str(tmp_path / "runs"), "--paper"]) == 0
    assert "| paper |" in capsys.readouterr().out


def test_an_unknown_column_metric_is_refused_with_did_you_mean(tmp_path, capsys):
    assert main(["report", str(_runs(tmp_path)), "--column", "VQA=vqa:acuracy_val"]) == 2
    err = capsys.readouterr().err
    assert "did you mean vqa:accuracy_val" in err


def test_runs_not_yet_evaluated_are_named(tmp_path, capsys):
    # A run without results.jsonl would silently be one seed fewer in its row.
    runs = _runs(tmp_path)
    for name in ("mynet-seed2", "sub/uniter-tiny-seed2"):
        (runs / name / "best").mkdir(parents=True)
        (runs / name / "config.yaml").write_text("task: vqa\n")
    assert main(["report", str(runs)]) == 0
    err = capsys.readouterr().err
    assert "note: 2 run(s) have no results.jsonl and are not in the table" in err
    assert "mynet-seed2" in err and "uniter-tiny-seed2" in err
    assert main(["report", str(runs / "mynet-seed0")]) == 0  # a run directory itself: nothing to note
    assert "note" not in capsys.readouterr().err
