"""A fine-tuned run as a task model (encoder + head + answers) with predict methods, and the processor that
turns raw texts and region records into a ``Batch``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import switchbert
from switchbert.cli import main
from switchbert.data import open_feature_store
from switchbert.metrics.vqa import predict_answers
from tests.test_train_support import QUIET, make_synth, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def runs(synth, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for task in ("vqa", "retrieval", "refexp"):
        assert main(["finetune", synth_config(task), f"data.root={synth}", f"output_dir={root / task}",
                     "model.init_from=null", "train.batch_size=8", "train.max_steps=1", *QUIET]) == 0
    return root


def test_processor_builds_the_batch_training_builds(synth):
    store = open_feature_store(synth / "features.lmdb")
    iid = store.ids()[0]
    record = store.get(iid)
    processor = switchbert.Processor(max_text_len=8)
    a = processor(["what color is the cube?"], [{"features": record.features, "boxes": record.boxes_px,
                                                 "image_w": record.image_w, "image_h": record.image_h}])
    b = processor.from_store("what color is the cube?", store, [iid])
    c = processor("what color is the cube?", record)
    for x in (b, c):
        assert torch.equal(a.text_ids, x.text_ids) and torch.equal(a.region_boxes, x.region_boxes)
    assert a.text_ids.shape == (1, 8) and a.text_mask.all() and a.region_feats.shape[2] == record.features.shape[1]
    assert a.region_boxes.shape[-1] == 5 and float(a.region_boxes.max()) <= 1.0
    with pytest.raises(ValueError, match="2 texts but 1 region"):
        processor(["a", "b"], [record])
    with pytest.raises(ValueError, match=r"lacks \['image_w', 'image_h'\]"):
        processor("a", {"features": record.features, "boxes": record.boxes_px})


def test_a_vqa_run_loads_as_a_task_model_that_answers(synth, runs):
    model = switchbert.load_task_model(runs / "vqa")
    assert model.task == "vqa" and model.processor.max_text_len == 23 and not model.training
    store = open_feature_store(synth / "features.lmdb")
    questions = json.loads((synth / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"][:3]
    answers = model.answer([q["question"] for q in questions], image_ids=[q["image_id"] for q in questions], store=store)
    assert len(answers) == 3 and all(a in model.answers.server_answers for a in answers)
    # The same as the encoder and the head by hand.
    encoder = switchbert.load_pretrained(runs / "vqa")
    batch = model.processor.from_store([q["question"] for q in questions], store, [q["image_id"] for q in questions])
    with torch.no_grad():
        logits = model.head(encoder(batch))
    assert answers == predict_answers(logits, model.answers)
    with pytest.raises(ValueError, match="score\\(\\) is for a retrieval model"):
        model.score(batch)


def test_retrieval_and_refexp_runs_score_and_locate(synth, runs):
    store = open_feature_store(synth / "features.lmdb")
    ids = store.ids()[:2]
    scores = switchbert.load_task_model(runs / "retrieval" / "best").score(["a red cube", "a ball"], image_ids=ids,
                                                                           store=store)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    ref = switchbert.load_task_model(runs / "refexp")
    found = ref.locate(["the red cube", "the ball"], image_ids=ids, store=store)
    for f, iid in zip(found, ids):
        record = store.get(iid)
        assert 0 <= f.index < len(record.boxes_px)
        assert np.allclose(f.box, record.boxes_px[f.index])


def test_a_pretraining_or_plain_model_directory_is_not_a_task_model(tmp_path):
    switchbert.create_model("uniter-tiny").save_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a fine-tuned checkpoint"):
        switchbert.load_task_model(tmp_path / "m")


def test_predict_answers_given_a_dict_says_so():
    with pytest.raises(TypeError, match="answer_vocab is a dict"):
        predict_answers(torch.zeros(1, 3), {"yes": 0, "no": 1, "2": 2})


# -- switchbert predict RUN INPUTS ----------------------------------------------------------------------
def test_predict_writes_the_server_files_of_each_task(synth, runs, tmp_path, capsys, caplog):
    questions = json.loads((synth / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    test = tmp_path / "test-questions.json"
    test.write_text(json.dumps({"questions": questions["questions"][:5]}))
    assert main(["predict", str(runs / "vqa"), str(test)]) == 0
    written = json.loads((runs / "vqa" / "predict" / "vqa_results_test-questions.json").read_text())
    assert sorted(r["question_id"] for r in written) == sorted(q["question_id"] for q in questions["questions"][:5])
    # A question whose image is not in the store: an error naming it, or with --skip-bad a file without it.
    bad = dict(questions["questions"][0], question_id=999999, image_id=424242)
    test.write_text(json.dumps({"questions": questions["questions"][:5] + [bad]}))
    assert main(["predict", str(runs / "vqa"), str(test), "--out", str(tmp_path / "o")]) == 2
    assert "999999" in capsys.readouterr().err
    assert main(["predict", str(runs / "vqa"), str(test), "--out", str(tmp_path / "o"), "--skip-bad"]) == 0
    assert "dropped 1 of 6 questions" in caplog.text and "999999" in caplog.text
    assert len(json.loads((tmp_path / "o" / "vqa_results_test-questions.json").read_text())) == 5

    flickr = synth / "flickr30k" / "test.jsonl"
    assert main(["predict", str(runs / "retrieval" / "best"), str(flickr), "--out", str(tmp_path / "r")]) == 0
    ranking = json.loads((tmp_path / "r" / "retrieval_ranking_test.json").read_text())
    scores = torch.load(tmp_path / "r" / "retrieval_scores_test.pt")
    assert scores.shape == (len(ranking["captions"]), len(ranking["images"]))

    store = open_feature_store(synth / "features.lmdb")
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps([{"ref_id": 1, "image_id": store.ids()[0], "sentence": "the red cube"}]))
    assert main(["predict", str(runs / "refexp"), str(refs), "--out", str(tmp_path / "x")]) == 0
    (found,) = json.loads((tmp_path / "x" / "refexp_results_refs.json").read_text())
    assert found["ref_id"] == 1 and len(found["box"]) == 4
