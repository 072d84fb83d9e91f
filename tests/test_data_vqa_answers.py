"""The official VQA answer normalisation and soft score, on hand-computed cases."""

import json

import pytest

from switchbert.data.errors import DataError
from switchbert.data.vqa_answers import (AnswerVocab, answer_scores, build_answer_vocab, majority_answer,
                                         normalize_answer, soft_score)


@pytest.mark.parametrize("raw, norm", [
    ("Yes", "yes"),
    ("yes.", "yes"),
    ("Two", "2"),
    ("none", "0"),
    ("ten apples", "10 apples"),
    ("the red one", "red 1"),
    ("A dog", "dog"),
    ("an apple", "apple"),
    ("dont know", "don't know"),
    ("isnt", "isn't"),
    ("couldnt've", "couldn't've"),
    ("couldntve", "couldntve"),  # not in the official table (only couldnt've / couldn'tve are)
    ("well", "well"),  # real words the official table leaves alone
    ("were", "were"),
    ("shell", "shell"),
    ("shed", "shed"),
    ("wed", "wed"),
    ("lets", "lets"),
    ("hes", "he's"),
    ("somebody'd", "somebodyd"),  # the official table's one backwards entry
    ("im", "im"),  # the official table's 'Im' is capitalised and never matches lower-cased text
    ("2.5", "2.5"),  # a period before a digit stays
    ("1,000", "1000"),  # digit-comma-digit: punctuation deleted, not spaced
    ("hot-dog", "hot dog"),  # no space next to '-': replaced by a space
    ("t - shirt", "t shirt"),  # ' -' present: deleted
    ("black/white", "black white"),
    ("yes!", "yes"),
    ("  left\tside\n", "left side"),
    ("it's", "it's"),  # apostrophes are not punctuation here
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_soft_score_counts():
    # c matching of 10: mean over the 10 leave-one-out subsets of min(matches/3, 1)
    # c=1: (1*0 + 9*1/3)/10 = 0.3; c=2: (2*1/3 + 8*2/3)/10 = 0.6; c=3: (3*2/3 + 7*1)/10 = 0.9; c=4: 1
    for c, expect in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)]:
        gts = ["cat"] * c + ["dog"] * (10 - c)
        assert soft_score("cat", gts) == pytest.approx(expect)


def test_soft_score_normalises_both_sides():
    gts = ["Two", "2", "two.", "3", "3", "3", "3", "3", "3", "three"]
    assert soft_score("2", gts) == pytest.approx(0.9)
    assert soft_score("three", gts) == pytest.approx(1.0)
    scores = answer_scores(gts)
    assert scores == pytest.approx({"2": 0.9, "3": 1.0})
    assert majority_answer(gts) == "3"


def test_soft_score_naive_leave_one_out():
    gts = ["a", "b", "b", "c", "c", "c", "b", "d", "e", "b"]  # 'a' normalises to '' (article)
    for ans in ("b", "c", "d", "zzz"):
        naive = 0.0
        for i in range(10):
            others = [normalize_answer(g) for j, g in enumerate(gts) if j != i]
            naive += min(1.0, others.count(normalize_answer(ans)) / 3) / 10
        assert soft_score(ans, gts) == pytest.approx(naive)


def test_answer_vocab_build_save_load(tmp_path):
    anns = {"annotations": [
        {"question_id": 1, "image_id": 1, "multiple_choice_answer": "Yes", "answers": [{"answer": "yes"}] * 10},
        {"question_id": 2, "image_id": 1, "multiple_choice_answer": "two", "answers": [{"answer": "2"}] * 10},
        {"question_id": 3, "image_id": 2, "answers": [{"answer": "Red"}] * 6 + [{"answer": "blue"}] * 4},
        {"question_id": 4, "image_id": 2, "multiple_choice_answer": "yes", "answers": [{"answer": "yes"}] * 10},
    ]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(anns))
    vocab = build_answer_vocab([p], top_k=3)
    assert vocab.answers == ["yes", "2", "red"]  # by count, ties alphabetical
    assert build_answer_vocab([p], top_k=2).answers == ["yes", "2"]
    vocab.save(tmp_path / "v.json")
    loaded = AnswerVocab.load(tmp_path / "v.json")
    assert loaded.answers == vocab.answers and loaded.index("red") == 2
    with pytest.raises(DataError, match=r"v\.json, item 'blue': answer outside the vocabulary"):
        loaded.index("blue")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON"):
        AnswerVocab.load(tmp_path / "bad.json")
