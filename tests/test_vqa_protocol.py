"""The VQA protocols: train only, or train + val minus a held-out minival (the paper's)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from switchbert.train.config import ConfigError, load_config
from switchbert.train.distributed import init_distributed
from switchbert.train.tasks import VQATask
from tests.test_train_support import make_synth, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def _task(synth: Path, *overrides: str) -> VQATask:
    config = load_config(synth_config("vqa"), [f"data.root={synth}", *overrides])
    from switchbert.data import open_feature_store

    feat_dim = open_feature_store(config.data.path("features")).feat_dim
    return VQATask(config, SimpleNamespace(region_feat_dim=feat_dim, name="test"), init_distributed("cpu"))


def _ids(path: Path, key: str = "questions") -> list[int]:
    return [q["question_id"] for q in json.loads(path.read_text())[key]]


def test_trainval_trains_on_train_and_val_minus_minival(synth):
    task = _task(synth, "data.vqa_protocol=trainval", "data.vqa_minival_size=3")
    d = task.config.data
    train_ids, val_ids = _ids(d.path("vqa_train_questions")), _ids(d.path("vqa_val_questions"))
    minival = set(sorted(val_ids)[-3:])  # VOLTA: the last questions of val in question-id order
    assert task.minival_ids() == minival
    trained = {item[0] for item in task.dataset("train").items}
    assert trained == set(train_ids) | (set(val_ids) - minival)
    assert {item[0] for item in task.dataset("minival").items} == minival
    assert task.test_splits == ("minival", "test-dev")
    with pytest.raises(ConfigError, match="overlaps the training data"):
        task.dataset("val")


def test_train_protocol_keeps_val_held_out(synth):
    task = _task(synth)
    d = task.config.data
    assert {item[0] for item in task.dataset("train").items} == set(_ids(d.path("vqa_train_questions")))
    assert {item[0] for item in task.dataset("val").items} == set(_ids(d.path("vqa_val_questions")))
    assert task.test_splits == ("val", "test-dev")


def test_bad_protocol_settings_are_config_errors(synth):
    with pytest.raises(ConfigError, match="vqa_protocol must be one of"):
        _task(synth, "data.vqa_protocol=trainvall")
    task = _task(synth, "data.vqa_protocol=trainval", "data.vqa_minival_size=100000")
    with pytest.raises(ConfigError, match="leaves no val question"):
        task.minival_ids()
    with pytest.raises(ConfigError, match="needs data.vqa_test_std_questions"):
        task.dataset("test-std")


def test_controlled_configs_follow_the_paper_protocol():
    root = Path(__file__).resolve().parents[1] / "configs" / "vqa"
    for path in sorted(root.glob("*.yaml")):
        config = load_config(path)
        assert config.data.vqa_protocol == "trainval", path
        assert config.eval.val_split == "minival" and config.eval.splits == ["minival", "test-dev", "test-std"], path
        assert config.data.vqa_test_std_questions and config.data.vqa_test_questions, path


def test_vqa_question_file_faults_name_file_and_item(tmp_path):
    from switchbert.data.errors import DataError
    from switchbert.data.vqa import load_questions
    from switchbert.data.vqa_answers import load_annotations

    def write(name, key, items):
        p = tmp_path / name
        p.write_text(json.dumps({key: items}))
        return p

    q = {"image_id": 1, "question": "what?"}
    p = write("q1.json", "questions", [{**q, "question_id": 1}, {**q, "question_id": "x7"}])
    with pytest.raises(DataError, match=r"q1\.json, item 'question #1': question_id must be an integer, got 'x7'"):
        load_questions(p)
    p = write("q2.json", "questions", [{**q, "question_id": 1.5}])
    with pytest.raises(DataError, match=r"q2\.json, item 'question #0': question_id must be an integer"):
        load_questions(p)
    p = write("q3.json", "questions", [{**q, "question_id": 4}, {"image_id": 1, "question": "who?", "question_id": 4}])
    with pytest.raises(DataError, match=r"q3\.json, item 'question #1 \(id 4\)': question id repeated .*another question"):
        load_questions(p)
    a = {"answers": [{"answer": "yes"}]}
    p = write("a1.json", "annotations", [{**a, "question_id": 4}, {**a, "question_id": 4}])
    with pytest.raises(DataError, match=r"a1\.json, item 'annotation #1 \(question 4\)': question id annotated twice"):
        load_annotations(p)
    p = write("a2.json", "annotations", [{**a, "question_id": "4"}])
    with pytest.raises(DataError, match=r"a2\.json, item 'annotation #0': question_id must be an integer"):
        load_annotations(p)
