"""`switchbert demo` end to end at its tiny size: every stage runs and the report has every section."""

from __future__ import annotations

import re

from switchbert.cli import main
from switchbert.demo import SIZES, ensure_data


def test_tiny_demo_writes_a_complete_report(tmp_path, capsys):
    assert main(["demo", "--size", "tiny", "--out", str(tmp_path), "--no-progress"]) == 0
    assert f"report: {tmp_path / 'report.md'}" in capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    for section in ("## Results", "## Routes Switch-BERT learned", "## FLOPs", "## Run", "What these numbers are",
                    "What they are not", "synthetic"):
        assert section in report, section
    # one results row per model, with a number in every task column
    for model in ("Switch-BERT", "UNITER"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {model} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        assert len(cells) == 5 and all(re.fullmatch(r"\d+\.\d", c) for c in cells), row
    chance = next(line for line in report.splitlines() if line.startswith("| *chance"))
    assert chance.count("|") == 7
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
