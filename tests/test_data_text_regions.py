"""Tokenizer parity with the reference BERT tokenizer, and region maths on hand-computed cases."""

import numpy as np
import pytest

from switchbert.data.regions import box_iou, normalize_boxes, process_regions, xywh_to_xyxy
from switchbert.data.tokenizer import VOCAB_PATH, encode, encode_batch, load_tokenizer


def test_vocab_is_bert_base_uncased():
    lines = VOCAB_PATH.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30522
    assert [lines[i] for i in (0, 100, 101, 102, 103)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_matches_transformers_bert_tokenizer():
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertTokenizer(str(VOCAB_PATH), do_lower_case=True)
    tok = load_tokenizer()
    texts = ["What colour is the CUBE left of the sphere?", "Two dogs, playing in the snow!",
             "naïve café résumé", "unaffable xylophonists 1,000.5", ""]
    for t in texts:
        assert encode(tok, t, 64) == ref.encode(t, add_special_tokens=True)


def test_truncation_keeps_cls_and_sep():
    tok = load_tokenizer()
    ids = encode(tok, "a " * 100, 23)
    assert len(ids) == 23 and ids[0] == 101 and ids[-1] == 102
    assert encode_batch(tok, ["a " * 100, "hi"], 5) == [[101, 1037, 1037, 1037, 102], [101, 7632, 102]]
    with pytest.raises(ValueError):
        encode(tok, "x", 1)


def test_normalize_boxes_hand_case():
    b = normalize_boxes(np.array([[10, 20, 110, 70], [-5, 0, 700, 480]]), 200, 100)
    np.testing.assert_allclose(b[0], [0.05, 0.2, 0.55, 0.7, 0.5 * 0.5], rtol=1e-6)
    np.testing.assert_allclose(b[1], [0.0, 0.0, 1.0, 1.0, 1.0])  # clipped to the image


def test_iou_hand_cases():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=np.float32)
    iou = box_iou(boxes, np.array([0, 0, 10, 10]))
    np.testing.assert_allclose(iou, [1.0, 25 / 175, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(xywh_to_xyxy([5, 6, 10, 20]), [5, 6, 15, 26])


def test_process_regions_keeps_the_first_36():
    f = np.arange(50 * 3, dtype=np.float16).reshape(50, 3)
    r = process_regions(f, np.tile([0, 0, 10, 10], (50, 1)), 10, 10, None, 36)
    assert r.features.dtype == np.float32 and r.num_regions == 36
    np.testing.assert_array_equal(r.features, f[:36].astype(np.float32))
