"""VQA accuracy equals the official evaluation rule (docs/heads_and_metrics.md).

The reference below is written from the published description of the VQA accuracy (Antol et al.
and the evaluation page of visualqa.org), independently of ``switchbert.data.vqa_answers``: a
different structure (character loops, an explicit leave-one-out loop). 10,000 random questions built
from tricky spellings must give 0 disagreements; hand-computed cases pin the rules that the old code
got wrong (always normalising; a contraction table that merged real words).
"""

from __future__ import annotations

import json
import random

import pytest

from switchbert.data.vqa_answers import (OFFICIAL_CONTRACTIONS, AnswerVocab, answer_scores, build_answer_vocab,
                                         normalize_answer, soft_score)
from switchbert.metrics import predict_answers, vqa_accuracy

# ------------------------------------------------------------------ reference, from the description
MARKS = set(';/[]"{}()=+\\_->@`,?!<')
NUMBERS = dict(zip("none zero one two three four five six seven eight nine ten".split(),
                   "0 0 1 2 3 4 5 6 7 8 9 10".split()))


def ref_clean(s: str) -> str:
    return s.replace("\n", " ").replace("\t", " ").strip()


def ref_has_digit_comma_digit(s: str) -> bool:
    return any(s[i] == "," and s[i - 1].isdigit() and s[i + 1].isdigit() and s[i - 1] in "0123456789"
               and s[i + 1] in "0123456789" for i in range(1, len(s) - 1))


def ref_normalise(s: str) -> str:
    # 1. punctuation: every mark goes; it leaves a space unless it touches a space in the answer or the
    #    answer has a digit-comma-digit group (decided per mark on the answer as given).
    delete = {m for m in MARKS if (m + " ") in s or (" " + m) in s or ref_has_digit_comma_digit(s)}
    chars = []
    for ch in s:
        if ch in MARKS:
            chars.append("" if ch in delete else " ")
        else:
            chars.append(ch)
    s = "".join(chars)
    # 2. periods not followed by a digit are deleted, the first 32 of them
    out, removed = [], 0
    for i, ch in enumerate(s):
        nxt = s[i + 1] if i + 1 < len(s) else ""
        if ch == "." and not (nxt and nxt in "0123456789") and removed < 32:
            removed += 1
            continue
        out.append(ch)
    # 3. words: lower-case, number words to digits, articles out, table contractions in
    words = []
    for w in "".join(out).lower().split():
        w = NUMBERS.get(w, w)
        if w in ("a", "an", "the"):
            continue
        words.append(OFFICIAL_CONTRACTIONS.get(w, w))
    return " ".join(words)


def ref_accuracy(pred: str, humans: list[str]) -> float:
    humans = [ref_clean(h) for h in humans]
    pred = ref_clean(pred)
    if len(set(humans)) > 1:  # normalise only when the humans disagree
        humans = [ref_normalise(h) for h in humans]
        pred = ref_normalise(pred)
    total = 0.0
    for left_out in range(len(humans)):
        rest = humans[:left_out] + humans[left_out + 1:]
        total += min(1.0, rest.count(pred) / 3.0)
    return total / len(humans)


# -------------------------------------------------------------------------------- random cases
TOKENS = [
    "well", "we'll", "were", "we're", "shell", "she'll", "shed", "she'd", "wed", "we'd", "lets", "let's",
    "its", "it's", "id", "i'd", "ill", "i'll", "im", "Im", "hes", "he's", "dont", "don't", "cant", "can't",
    "couldnt've", "couldntve", "couldn'tve", "somebody'd", "somebodyd", "yall", "y'all", "twas", "'twas",
    "Two", "two", "2", "none", "zero", "0", "ten", "10", "one", "1", "a", "an", "the", "A", "The",
    "Yes", "yes", "YES", "no", "No.", "1,000", "1000", "2.5", "3.", "t-shirt", "t - shirt", "black/white",
    "a.m.", "u.s.a", "(left)", "right!", "what?", "x;y", "@home", "<3", "a+b", "hot_dog", "`q`", '"hi"',
    "[red]", "{k}", "=", "\\", "....", "e.g.", "1.5.2", "..." * 12,
]
SEPARATORS = [" ", " ", "", "  ", "\t", "-", " - ", ","]


def random_answer(rng: random.Random) -> str:
    parts = [rng.choice(TOKENS) for _ in range(rng.randint(1, 3))]
    text = parts[0]
    for p in parts[1:]:
        text += rng.choice(SEPARATORS) + p
    return rng.choice(["", "", " ", "\n", "\t "]) + text + rng.choice(["", "", " ", "\n"])


def random_question(rng: random.Random) -> tuple[str, list[str]]:
    pool = [random_answer(rng) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.3:  # unanimous (sometimes up to whitespace): the no-normalisation branch
        base = pool[0].strip()
        humans = [rng.choice([base, base, " " + base, base + "\n"]) for _ in range(10)]
    else:
        humans = [rng.choice(pool) for _ in range(10)]
    pred = rng.choice([*pool, random_answer(rng), normalize_answer(rng.choice(pool)), rng.choice(pool).upper()])
    return pred, humans


def test_ten_thousand_random_questions_match_the_reference():
    rng = random.Random(1234)
    disagreements = []
    for _ in range(10_000):
        pred, humans = random_question(rng)
        if abs(soft_score(pred, humans) - ref_accuracy(pred, humans)) > 1e-12:
            disagreements.append((pred, humans))
    assert disagreements == []


def test_random_answers_normalise_like_the_reference():
    rng = random.Random(99)
    for _ in range(3000):
        a = random_answer(rng)
        assert normalize_answer(a) == ref_normalise(ref_clean(a)), a


# ------------------------------------------------------------------------------ hand-computed
@pytest.mark.parametrize("pred, humans, expect", [
    ("2", ["two"] * 10, 0.0),  # unanimous humans: no normalisation, exact string match (old code: 1)
    ("two", ["two"] * 10, 1.0),
    ("two", [" two", "two\n"] + ["two"] * 8, 1.0),  # whitespace is cleaned before the unanimity test
    ("Two", ["two"] * 10, 0.0),  # not even lower-cased
    ("2", ["two"] * 9 + ["2"], 1.0),  # humans disagree as strings: everything normalised
    ("shell", ["shell"] * 2 + ["she'll"] * 8, 0.6),  # old table: shell -> she'll, score 1.0
    ("well", ["well"] * 3 + ["we'll"] * 7, 0.9),
    ("we'll", ["well"] * 3 + ["we'll"] * 7, 1.0),
    ("lets", ["lets"] + ["let's"] * 9, 0.3),
    ("hes", ["he's"] * 3 + ["no"] * 7, 0.9),  # 'hes' is in the table
    ("cat", ["cat"] * 3 + ["dog"] * 7, 0.9),
    ("cat", ["cat"], 0.0),  # one human: leaving it out leaves nothing to match
])
def test_hand_computed_official_scores(pred, humans, expect):
    assert soft_score(pred, humans) == pytest.approx(expect)
    assert ref_accuracy(pred, humans) == pytest.approx(expect)


def test_official_contraction_table_facts():
    t = OFFICIAL_CONTRACTIONS
    assert len(t) == 120
    for word in ("well", "were", "shell", "shed", "wed", "lets", "ill", "id", "its", "couldntve"):
        assert word not in t
    assert t["dont"] == "don't" and t["hes"] == "he's" and t["couldnt've"] == "couldn't've"
    assert t["somebody'd"] == "somebodyd" and t["let's"] == "let's" and t["Im"] == "I'm"


def test_training_targets_always_normalise():
    # The classifier's targets merge spellings even for unanimous humans; evaluation does not.
    assert answer_scores(["two"] * 10) == {"2": 1.0}
    assert soft_score("2", ["two"] * 10) == 0.0


def _write(tmp_path, anns):
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"annotations": anns}))
    return p


def test_server_answers_are_raw_forms_annotators_wrote(tmp_path):
    anns = [
        {"question_id": 1, "image_id": 1, "multiple_choice_answer": "shell",
         "answers": [{"answer": "shell", "answer_id": k} for k in range(10)]},
        {"question_id": 2, "image_id": 1, "multiple_choice_answer": "two",
         "answers": [{"answer": "two", "answer_id": k} for k in range(10)]},
        {"question_id": 3, "image_id": 2, "multiple_choice_answer": "2",
         "answers": [{"answer": a, "answer_id": k} for k, a in enumerate(["2"] * 4 + ["two"] * 6)]},
        {"question_id": 4, "image_id": 2, "multiple_choice_answer": "couldn't've",
         "answers": [{"answer": "couldnt've ", "answer_id": k} for k in range(10)]},
        {"question_id": 5, "image_id": 3, "multiple_choice_answer": "no",  # a tie: the class's own spelling
         "answers": [{"answer": a, "answer_id": k} for k, a in enumerate(["No!", "no"] * 5)]},
    ]
    vocab = build_answer_vocab([_write(tmp_path, anns)])
    server = dict(zip(vocab.answers, vocab.server_answers))
    assert server == {"2": "two", "shell": "shell", "couldn't've": "couldnt've", "no": "no"}
    # The written strings score as the humans wrote them; the classes themselves would not.
    assert soft_score(server["2"], ["two"] * 10) == 1.0 and soft_score("2", ["two"] * 10) == 0.0
    assert soft_score(server["couldn't've"], ["couldnt've"] * 10) == 1.0
    # predict_answers writes the server form; the saved vocabulary keeps it.
    logits = [[0.0] * len(vocab) for _ in range(2)]
    logits[0][vocab.index("2")] = 1.0
    logits[1][vocab.index("shell")] = 1.0
    import torch

    assert predict_answers(torch.tensor(logits), vocab) == ["two", "shell"]
    vocab.save(tmp_path / "v.json")
    again = AnswerVocab.load(tmp_path / "v.json")
    assert again.server_answers == vocab.server_answers and again.has_server_answers
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(vocab.answers))
    legacy = AnswerVocab.load(plain)
    assert not legacy.has_server_answers
    assert legacy.with_server_answers([_write(tmp_path, anns)]).server_answers == vocab.server_answers


def test_vqa_accuracy_is_the_official_mean():
    preds = ["2", "two", "shell"]
    humans = [["two"] * 10, ["two"] * 10, ["shell"] * 2 + ["she'll"] * 8]
    assert vqa_accuracy(preds, humans) == pytest.approx(100 * (0 + 1 + 0.6) / 3)
