"""metrics.jsonl on a fresh start and on resume, and TensorBoard asked for but missing."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from tests.test_train_support import pretrain, read_jsonl
from tests.test_train_support import stopped, synth  # noqa: F401 (fixtures)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------------- metrics.jsonl
def test_fresh_start_after_a_kill_does_not_append_to_the_old_log(synth, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 1, "epoch": 0, "loss": 9.0}) + "\n")
    with caplog.at_level(logging.WARNING):
        assert pretrain(synth, out, "train.stop_after=2") == 0
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2]
    assert read_jsonl(out / "metrics.jsonl.1")[0]["loss"] == 9.0
    assert "renamed to metrics.jsonl.1" in caplog.text


def test_resume_drops_a_torn_last_line_and_names_the_file_for_a_bad_one(synth, stopped, caplog, capsys):
    with open(stopped / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 2, "ep')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        assert pretrain(synth, stopped, "--resume", "train.stop_after=1") == 0
    assert "dropped a torn last line" in caplog.text
    steps = [r["step"] for r in read_jsonl(stopped / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2]
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, "{not json")
    (stopped / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert pretrain(synth, stopped, "--resume", "train.stop_after=1") == 2
    assert f"{stopped / 'metrics.jsonl'}:2: not a JSON record" in capsys.readouterr().err


def test_tensorboard_asked_for_but_missing_is_a_warning(tmp_path, monkeypatch, caplog):
    from switchbert.train.metrics_log import MetricsLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING):
        MetricsLog(tmp_path, tensorboard=True).close()
    assert "tensorboard is not installed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        MetricsLog(tmp_path, tensorboard=False).close()
    assert "tensorboard" not in caplog.text


def test_tensorboard_is_off_unless_a_recipe_asks():
    """A run that did not ask for TensorBoard prints no warning about it (the controlled-setting recipes
    ask; the synthetic ones do not)."""
    from switchbert.recipes import recipe_path
    from switchbert.train.config import TrainSection, load_config

    assert TrainSection().tensorboard is False
    assert load_config(recipe_path("synth/vqa")).train.tensorboard is False
    assert load_config(recipe_path("vqa/uniter")).train.tensorboard is True


def test_resume_before_a_validation_drops_its_records_once_logged(tmp_path):
    """A kill after an epoch's validation was logged but before the checkpoint after it: the resumed run
    (from last/, written before that validation) runs it again, so its lines at that step go; train
    lines at that step stay (that training is not redone)."""
    from switchbert.train.metrics_log import MetricsLog

    lines = [{"split": "train", "step": 1, "epoch": 0}, {"split": "train", "step": 2, "epoch": 0},
             {"split": "val", "step": 2, "epoch": 0}, {"split": "train", "step": 3, "epoch": 1}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    MetricsLog(tmp_path, tensorboard=False, truncate_after_step=2, redo_validation=True).close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == lines[:2]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    MetricsLog(tmp_path, tensorboard=False, truncate_after_step=2).close()
    assert read_jsonl(tmp_path / "metrics.jsonl") == lines[:3]
