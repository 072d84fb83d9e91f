"""Bad input: an error naming the file and the item, or (skip_bad) a counted skip with a warning."""

import json
import pickle

import numpy as np
import pytest

from switchbert.data import (CaptionPairsDataset, RefCOCODataset, RetrievalEvalDataset, VQADataset, load_tokenizer,
                             open_feature_store, write_store)
from switchbert.data.errors import DataError, DataWarning
from switchbert.data.features import RegionRecord
from switchbert.data.retrieval import load_flickr_jsonl
from switchbert.data.vqa_answers import AnswerVocab


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    recs = []
    for i, n in enumerate([3, 4, 0, 5]):  # image "3" has zero regions
        xy = rng.uniform(0, 50, (n, 2))
        recs.append(RegionRecord(str(i + 1), rng.random((n, 8), dtype=np.float32),
                                 np.concatenate([xy, xy + 20], 1).astype(np.float32), 100, 100,
                                 rng.dirichlet(np.ones(5), n).astype(np.float32)))
    write_store(tmp_path / "f", recs, "fast")
    return open_feature_store(tmp_path / "f")


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_captions_empty_and_missing_image(tmp_path, store, tok):
    p = tmp_path / "caption_train.json"
    p.write_text(json.dumps({"1": "a red cube", "2": "   ", "4": "a ball"}))
    with pytest.raises(DataError, match=r"caption_train\.json, item '2': empty caption"):
        CaptionPairsDataset(p, store, tok)
    p.write_text(json.dumps({"1": "a red cube", "99": "x", "4": "a ball"}))
    with pytest.raises(DataError, match=r"caption_train\.json, item '99': missing image id"):
        CaptionPairsDataset(p, store, tok)
    with pytest.warns(DataWarning, match="99"):
        ds = CaptionPairsDataset(p, store, tok, skip_bad=True)
    assert len(ds) == 2 and ds.policy.skipped == 1
    p.write_text("{not json")
    with pytest.raises(DataError, match=r"caption_train\.json: malformed JSON at line 1"):
        CaptionPairsDataset(p, store, tok)


def test_zero_regions_where_required(tmp_path, store, tok):
    p = tmp_path / "caption_train.json"
    p.write_text(json.dumps({"1": "a red cube", "3": "nothing here"}))
    ds = CaptionPairsDataset(p, store, tok, itm_mismatch_prob=0.0)
    with pytest.raises(DataError, match=r"f, item '3': zero regions"):
        ds[1]
    skipping = CaptionPairsDataset(p, store, tok, itm_mismatch_prob=0.0, skip_bad=True)
    with pytest.warns(DataWarning):
        assert skipping[1] is None
    batch, labels = skipping.collate([skipping[0], None])  # no warning per batch: one summary per pass
    assert batch.batch_size == 1 and skipping.policy.skipped == 1
    # without MRC an image with no region is fine: the model still has its IMG token
    ok = CaptionPairsDataset(p, store, tok, mrc=False)
    assert ok[1].regions.num_regions == 0


def test_vqa_answer_outside_vocabulary_and_bad_question(tmp_path, store, tok):
    q = tmp_path / "q.json"
    a = tmp_path / "a.json"
    q.write_text(json.dumps({"questions": [{"question_id": 10, "image_id": 1, "question": "what color?"},
                                           {"question_id": 11, "image_id": 2, "question": "how many?"}]}))
    a.write_text(json.dumps({"annotations": [
        {"question_id": 10, "image_id": 1, "answers": [{"answer": "red"}] * 10},
        {"question_id": 11, "image_id": 2, "answers": [{"answer": "seven"}] * 10}]}))
    vocab = AnswerVocab(["red", "blue"], source="answers.json")
    with pytest.raises(DataError, match=r"a\.json, item 11: answer outside the vocabulary"):
        VQADataset(q, a, store, tok, vocab, oov="error")
    with pytest.warns(DataWarning, match="1 questions have no answer"):
        kept = VQADataset(q, a, store, tok, vocab, oov="keep")
    assert len(kept) == 2 and kept.collate([kept[1]])[1].scores.sum() == 0
    with pytest.warns(DataWarning):
        assert len(VQADataset(q, a, store, tok, vocab, oov="drop")) == 1
    q.write_text(json.dumps({"questions": [{"question_id": 12, "image_id": 1, "question": ""}]}))
    with pytest.raises(DataError, match=r"q\.json, item 12: empty question"):
        VQADataset(q, None, store, tok, vocab)


def test_flickr_malformed_line_and_empty_caption(tmp_path, store, tok):
    p = tmp_path / "test.jsonl"
    good = {"id": "1", "sentences": ["a"] * 5, "img_path": "1.jpg"}
    p.write_text(json.dumps(good) + "\n" + '{"id": "2", "sentences": [\n' + json.dumps({**good, "id": "4"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl, item 'line 2': malformed JSON line"):
        load_flickr_jsonl(p)
    p.write_text(json.dumps(good) + "\n" + json.dumps({"id": "2", "sentences": ["a", ""]}) + "\n")
    with pytest.raises(DataError, match=r"line 2 \(image 2\) caption 1'?: empty caption"):
        RetrievalEvalDataset(p, store, tok)
    with pytest.warns(DataWarning):
        ds = RetrievalEvalDataset(p, store, tok, skip_bad=True)
    assert ds.num_images == 1 and ds.policy.skipped == 1


def test_refcoco_missing_annotation_and_zero_regions(tmp_path, store, tok):
    refs = [{"ref_id": 0, "ann_id": 100, "image_id": 1, "split": "val", "sentences": [{"sent": "the cube", "sent_id": 0}]},
            {"ref_id": 1, "ann_id": 300, "image_id": 3, "split": "val", "sentences": [{"sent": "the ball", "sent_id": 1}]},
            {"ref_id": 2, "ann_id": 999, "image_id": 1, "split": "testA", "sentences": [{"sent": "x", "sent_id": 2}]}]
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs))
    (tmp_path / "instances.json").write_text(json.dumps({"annotations": [
        {"id": 100, "image_id": 1, "bbox": [0, 0, 20, 20]}, {"id": 300, "image_id": 3, "bbox": [1, 1, 5, 5]}]}))
    ds = RefCOCODataset(tmp_path / "refs(unc).p", tmp_path / "instances.json", store, tok, "val")
    assert len(ds) == 2 and ds[0].iou.shape == (3,)
    with pytest.raises(DataError, match=r"item '3': zero regions"):
        ds[1]
    with pytest.raises(DataError, match=r"instances\.json, item 'ann 999 \(ref 2\)'"):
        RefCOCODataset(tmp_path / "refs(unc).p", tmp_path / "instances.json", store, tok, "testA")
    (tmp_path / "bad.p").write_bytes(b"\x80garbage")
    with pytest.raises(DataError, match=r"bad\.p: corrupt pickle"):
        RefCOCODataset(tmp_path / "bad.p", tmp_path / "instances.json", store, tok, "val")


def test_error_survives_pickling():
    err = DataError("/x/y.json", 5, "empty caption")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "/x/y.json, item 5: empty caption" and isinstance(again, ValueError)


def test_vqa_results_file(tmp_path):
    from switchbert.metrics import write_vqa_results

    write_vqa_results(tmp_path / "r.json", [3, 1], ["yes", "2"])
    assert json.loads((tmp_path / "r.json").read_text()) == [{"question_id": 3, "answer": "yes"},
                                                           {"question_id": 1, "answer": "2"}]
    with pytest.raises(ValueError):
        write_vqa_results(tmp_path / "r.json", [1], [])
