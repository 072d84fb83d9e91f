"""VQA answers: the official normalisation, the soft score, and the answer vocabulary (SPEC §7).

The rules are those of the official VQA evaluation (Antol et al.; ``vqaEval.py``), re-implemented:

1. newlines and tabs become spaces; surrounding whitespace is stripped;
2. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when it touches a space in the
   original answer or the answer contains a digit-comma-digit group (``1,000``), else replaced by a
   space; a period not followed by a digit is deleted (so ``2.5`` survives);
3. lower-case, split on whitespace; number words ``none zero one ... ten`` become digits; the articles
   ``a an the`` are dropped; apostrophe-less contractions get their apostrophe back (``dont`` ->
   ``don't``, ``couldntve`` -> ``couldn't've``).

Departures, on purpose: the official script normalises only when the ten human answers disagree, and
its period rule stops after 32 replacements; we always normalise, with no cap. The official contraction
table also lists ``Im``/``Ive``/``Id`` with a capital I, which can never match lower-cased text; we
leave them out, which gives the same result.

The score of an answer is the official accuracy: the mean over the 10 leave-one-out subsets of the
human answers of ``min(#subset answers equal to it / 3, 1)``. With c of 10 annotators agreeing:
c=0 -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from switchbert.data.errors import DataError, PathLike, load_json

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})

# The contractions the official table restores, written with their apostrophes; the lookup table maps
# every form with one or more apostrophes missing (as the official table does) back to these.
_CONTRACTIONS = """ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't
haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll let's ma'am mightn't mightn't've
might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd she'd've she'll she's
should've shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've
someone'll someone's something'd something'd've something'll that's there'd there'd've there're there's
they'd they'd've they'll they're they've 'twas wasn't we'd we'd've we'll we're we've weren't what'll
what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're
why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're
you've""".split()


def _contraction_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for full in _CONTRACTIONS:
        positions = [i for i, ch in enumerate(full) if ch == "'"]
        # every non-empty subset of the apostrophes removed
        for mask in range(1, 1 << len(positions)):
            drop = {positions[k] for k in range(len(positions)) if mask >> k & 1}
            table["".join(ch for i, ch in enumerate(full) if i not in drop)] = full
    return table


CONTRACTIONS = _contraction_table()


def _process_punctuation(text: str) -> str:
    out = text
    strip_all = _COMMA_NUMBER.search(text) is not None
    for p in _PUNCT:
        # the official rule tests the ORIGINAL text for each mark, not the running result
        if strip_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out)


def _process_digits_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


@lru_cache(maxsize=1 << 16)  # answers repeat heavily (yes, no, 2, ...); normalising is pure
def normalize_answer(answer: str) -> str:
    """The official VQA normalisation of one answer string (see the module docstring)."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digits_articles(_process_punctuation(text))


def soft_score(answer: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy of ``answer`` against the human answers (normally 10).

    Both sides are normalised. Mean over the leave-one-out subsets of min(#matches / 3, 1).
    """
    if not gt_answers:
        raise ValueError("soft_score needs at least one human answer")
    pred = normalize_answer(answer)
    gts = [normalize_answer(a) for a in gt_answers]
    c = sum(g == pred for g in gts)
    return _loo_score(c, len(gts))


def _loo_score(count: int, total: int) -> float:
    # Leaving out one of the `count` matching answers leaves count-1 matches; leaving out any of the
    # other total-count answers leaves count.
    if total == 1:
        return 0.0
    with_match = count * min(1.0, (count - 1) / 3.0) if count else 0.0
    without = (total - count) * min(1.0, count / 3.0)
    return (with_match + without) / total


def answer_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Soft score of every distinct (normalised) human answer; answers absent from the dict score 0."""
    gts = [normalize_answer(a) for a in gt_answers]
    counts = Counter(gts)
    return {a: _loo_score(c, len(gts)) for a, c in counts.items()}


@dataclass
class AnswerVocab:
    """The answer classes of the VQA head (normalised strings), most frequent first.

    Attributes:
        answers: the answer strings; index i is output unit i.
        source: where the vocabulary came from (a file, or 'built'), for error messages.
    """

    answers: list[str]
    source: str = "built"

    def __post_init__(self) -> None:
        self._index = {a: i for i, a in enumerate(self.answers)}
        if len(self._index) != len(self.answers):
            raise ValueError(f"{self.source}: the answer vocabulary has duplicate entries")

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return answer in self._index

    def get(self, answer: str) -> Optional[int]:
        """Index of a normalised answer, or None when it is outside the vocabulary."""
        return self._index.get(answer)

    def index(self, answer: str) -> int:
        """Index of a normalised answer; DataError naming the vocabulary when it is not in it."""
        i = self._index.get(answer)
        if i is None:
            raise DataError(self.source, answer, f"answer outside the vocabulary of {len(self)} answers")
        return i

    def save(self, path: PathLike) -> None:
        Path(path).write_text(json.dumps(self.answers, indent=0))

    @classmethod
    def load(cls, path: PathLike) -> "AnswerVocab":
        try:
            answers = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise DataError(path, None, f"malformed JSON: {exc}") from exc
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(path, None, "an answer vocabulary must be a JSON list of strings")
        return cls(answers, source=str(path))


def majority_answer(gt_answers: Sequence[str]) -> str:
    """The most frequent normalised human answer (ties broken alphabetically, for determinism)."""
    counts = Counter(normalize_answer(a) for a in gt_answers)
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def build_answer_vocab(annotation_files: Iterable[PathLike], top_k: int = 3129) -> AnswerVocab:
    """The ``top_k`` most frequent answers over official VQAv2 annotation files (train and val).

    Frequency = the number of questions whose ``multiple_choice_answer`` (the annotators' majority;
    recomputed from the 10 answers when absent) is that answer after normalisation, as in the
    bottom-up-attention recipe that produced the 3,129-answer set. Ties are broken alphabetically.
    """
    counts: Counter = Counter()
    for path in annotation_files:
        for ann in load_annotations(path):
            mc = ann.get("multiple_choice_answer")
            counts[normalize_answer(mc) if mc else majority_answer([a["answer"] for a in ann["answers"]])] += 1
    counts.pop("", None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return AnswerVocab([a for a, _ in ranked[:top_k]])


def load_annotations(path: PathLike) -> list[dict]:
    """The ``annotations`` list of an official VQAv2 annotation file, checked item by item."""
    data = load_json(path)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise DataError(path, None, "not a VQA annotation file: no 'annotations' list")
    for i, ann in enumerate(anns):
        qid = ann.get("question_id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        if not isinstance(ann, dict) or "question_id" not in ann or not isinstance(ann.get("answers"), list):
            raise DataError(path, qid, "annotation needs question_id and an answers list")
        if not ann["answers"] or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in ann["answers"]):
            raise DataError(path, qid, "answers must be a non-empty list of {'answer': str}")
    return anns


