"""Validation and test inputs are checked before the first step, and an evaluation that fails on one
split keeps the splits it had already scored."""

from __future__ import annotations

import json
import shutil

import pytest

from switchbert.cli import main
from tests.test_train_support import QUIET, make_synth, read_jsonl, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

VAL_Q = "vqa/v2_OpenEnded_mscoco_val2014_questions.json"


@pytest.fixture
def synth(tmp_path):
    return make_synth(tmp_path / "synth")


def _break_image(path, image_id=987654):
    data = json.loads(path.read_text())
    data["questions"][-1]["image_id"] = image_id
    path.write_text(json.dumps(data))


def test_a_validation_image_missing_from_the_store_is_found_before_the_first_step(synth, tmp_path, capsys):
    _break_image(synth / VAL_Q)
    out = tmp_path / "run"
    rc = main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
               "train.batch_size=8", "train.epochs=1", *QUIET])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "v2_OpenEnded_mscoco_val2014_questions.json" in err and "987654" in err
    assert not (out / "metrics.jsonl").exists()  # not one step was trained


def test_a_missing_test_file_is_found_before_training_and_before_scoring(synth, tmp_path, capsys, caplog):
    out = tmp_path / "run"
    missing = synth / "vqa" / "no_such_test.json"
    args = ["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
            "train.batch_size=8", "train.max_steps=1", *QUIET]
    # test-std questions may be named before they are downloaded: training says so and goes on ...
    assert main([*args, f"data.vqa_test_std_questions={missing}", "eval.splits=[val,test-std]"]) == 0
    assert "data.vqa_test_std_questions" in caplog.text
    # ... and evaluation refuses before it scores anything.
    rc = main(["evaluate", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "data.vqa_test_std_questions" in err and "no_such_test.json" in err, err
    assert not (out / "eval").exists()  # refused before scoring anything


def test_an_evaluation_that_fails_on_a_split_keeps_the_splits_already_scored(synth, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
                 "train.batch_size=8", "train.max_steps=1", *QUIET]) == 0
    test = synth / "vqa" / "test.json"
    shutil.copy(synth / VAL_Q, test)
    _break_image(test)
    rc = main(["evaluate", str(out), "--no-progress", "--splits", "val", "test-dev",
               f"data.vqa_test_questions={test}"])
    err = capsys.readouterr().err
    assert rc == 2 and "test.json" in err and "987654" in err, err
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert "accuracy" in metrics["val"] and "test-dev" not in metrics
    assert {r["split"] for r in read_jsonl(out / "results.jsonl")} == {"val"}
    assert (out / "best" / "model.safetensors").is_file()


def test_a_feature_size_that_does_not_fit_the_model_is_refused_before_the_run_directory(synth, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
               "model.preset=switchbert-mini", *QUIET])
    assert rc == 2 and "64-d region features" in capsys.readouterr().err
    assert not out.exists()
