"""VQA answers: the official evaluation rule, the training targets, and the answer vocabulary (docs/method.md §7).

Two uses, two rules; keep them apart:

* **Evaluation** (:func:`soft_score`, used by ``switchbert.metrics.vqa_accuracy``) is the official
  VQA accuracy (Antol et al.; the reference ``vqaEval.py``), re-implemented. Every answer (the
  prediction and the ten human answers) has newlines and tabs turned into spaces and is stripped.
  Then, **only when the human answers are not all identical**, every answer is normalised by
  :func:`normalize_answer`; when all ten humans wrote the same string the prediction must equal it
  exactly (``"2"`` scores 0 against ten ``"two"``). The score is the mean over the leave-one-out
  subsets of the human answers of ``min(#answers in the subset equal to the prediction / 3, 1)``:
  with c of 10 humans agreeing, c=0 -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >=4 -> 1.
* **Training targets** (:func:`answer_scores`, :func:`majority_answer`, the answer classes of
  :class:`AnswerVocab`) always normalise, so ``"two"`` and ``"2"`` are one class. [ours] This is the
  usual practice (the bottom-up-attention preprocessing VOLTA uses also normalises always); it only
  decides what the classifier learns, never the reported number.

The normalisation (:func:`normalize_answer`), step by step as the official evaluator does it:

1. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: each mark is deleted when it touches a
   space in the (stripped) answer, or when the answer contains a digit-comma-digit group (``1,000``);
   otherwise it is replaced by a space. The tests look at the answer as it was before any mark was
   handled, not at the running result;
2. a period not followed by a digit is deleted (``2.5`` survives); like the official code (whose
   ``re.UNICODE`` lands in the ``count`` argument of ``re.sub``) at most the first 32 such periods
   are deleted;
3. lower-case and split on whitespace; the number words ``none zero one ... ten`` become digits; the
   articles ``a an the`` are dropped; each remaining word found in :data:`OFFICIAL_CONTRACTIONS` is
   replaced by its entry. That table is the official one, entry for entry: only the listed spellings
   are rewritten, so ``well``, ``were``, ``shell``, ``shed``, ``wed``, ``lets``, ``ill``, ``id`` stay
   as they are. It holds a few entries that can never fire on lower-cased text (``Im``, ``Ive``) and
   one that goes backwards (``somebody'd`` -> ``somebodyd``); both are kept, because the official
   number depends on them.

Digits are ASCII digits (``[0-9]``), as in the Python 2 original, whose patterns had no UNICODE flag.
The official evaluator rounds the printed accuracies to 2 decimals; we do not round.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

from switchbert.data.errors import DataError, PathLike, load_json

_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_COMMA_NUMBER = re.compile(r"([0-9])(,)([0-9])")
_PERIOD = re.compile(r"\.(?![0-9])")
_PERIOD_LIMIT = 32  # the official code deletes at most this many periods (see the module docstring)
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                 "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})

# The official evaluator's contraction table, as data: "spelling replacement" pairs, two spaces apart.
_CONTRACTION_PAIRS = """
    aint ain't  arent aren't  cant can't  couldve could've
    couldnt couldn't  couldn'tve couldn't've  couldnt've couldn't've  didnt didn't
    doesnt doesn't  dont don't  hadnt hadn't  hadnt've hadn't've
    hadn'tve hadn't've  hasnt hasn't  havent haven't  hed he'd
    hed've he'd've  he'dve he'd've  hes he's  howd how'd
    howll how'll  hows how's  Id've I'd've  I'dve I'd've
    Im I'm  Ive I've  isnt isn't  itd it'd
    itd've it'd've  it'dve it'd've  itll it'll  let's let's
    maam ma'am  mightnt mightn't  mightnt've mightn't've  mightn'tve mightn't've
    mightve might've  mustnt mustn't  mustve must've  neednt needn't
    notve not've  oclock o'clock  oughtnt oughtn't  ow's'at 'ow's'at
    'ows'at 'ow's'at  'ow'sat 'ow's'at  shant shan't  shed've she'd've
    she'dve she'd've  she's she's  shouldve should've  shouldnt shouldn't
    shouldnt've shouldn't've  shouldn'tve shouldn't've  somebody'd somebodyd  somebodyd've somebody'd've
    somebody'dve somebody'd've  somebodyll somebody'll  somebodys somebody's  someoned someone'd
    someoned've someone'd've  someone'dve someone'd've  someonell someone'll  someones someone's
    somethingd something'd  somethingd've something'd've  something'dve something'd've  somethingll something'll
    thats that's  thered there'd  thered've there'd've  there'dve there'd've
    therere there're  theres there's  theyd they'd  theyd've they'd've
    they'dve they'd've  theyll they'll  theyre they're  theyve they've
    twas 'twas  wasnt wasn't  wed've we'd've  we'dve we'd've
    weve we've  werent weren't  whatll what'll  whatre what're
    whats what's  whatve what've  whens when's  whered where'd
    wheres where's  whereve where've  whod who'd  whod've who'd've
    who'dve who'd've  wholl who'll  whos who's  whove who've
    whyll why'll  whyre why're  whys why's  wont won't
    wouldve would've  wouldnt wouldn't  wouldnt've wouldn't've  wouldn'tve wouldn't've
    yall y'all  yall'll y'all'll  y'allll y'all'll  yall'd've y'all'd've
    y'alld've y'all'd've  y'all'dve y'all'd've  youd you'd  youd've you'd've
    you'dve you'd've  youll you'll  youre you're  youve you've
"""


def _parse_pairs(text: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in text.strip().splitlines():
        for pair in line.strip().split("  "):
            spelling, replacement = pair.split(" ")
            table[spelling] = replacement
    return table


OFFICIAL_CONTRACTIONS: dict[str, str] = _parse_pairs(_CONTRACTION_PAIRS)
"""The 120 entries of the official table (spelling -> replacement)."""

CONTRACTIONS = OFFICIAL_CONTRACTIONS  # the name earlier versions exported


def clean_answer(answer: str) -> str:
    """Newlines and tabs to spaces, surrounding whitespace stripped: what the evaluator does to every answer."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    out = text
    strip_all = _COMMA_NUMBER.search(text) is not None
    for p in _PUNCT:
        # the official rule tests the ORIGINAL text for each mark, not the running result
        if strip_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def _process_digits_articles(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(OFFICIAL_CONTRACTIONS.get(w, w) for w in words)


@lru_cache(maxsize=1 << 16)  # answers repeat heavily (yes, no, 2, ...); normalising is pure
def normalize_answer(answer: str) -> str:
    """The official VQA normalisation of one answer string (steps 1-3 of the module docstring), after
    :func:`clean_answer`. Evaluation applies it only to questions whose human answers disagree."""
    return _process_digits_articles(_process_punctuation(clean_answer(answer)))


def official_forms(answer: str, gt_answers: Sequence[str]) -> tuple[str, list[str]]:
    """The prediction and the human answers as the official evaluator compares them.

    All are cleaned (:func:`clean_answer`); all are normalised only when the cleaned human answers
    are not all the same string.
    """
    gts = [clean_answer(a) for a in gt_answers]
    pred = clean_answer(answer)
    if len(set(gts)) > 1:
        return normalize_answer(pred), [normalize_answer(a) for a in gts]
    return pred, gts


def soft_score(answer: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy in [0, 1] of ``answer`` against the human answers (normally 10).

    The evaluation rule of the module docstring: normalisation only when the humans disagree, then
    the mean over the leave-one-out subsets of min(#matches / 3, 1). Each entry of ``gt_answers`` is
    one annotator's record (VQAv2 gives each its own ``answer_id``), so leaving one out removes one.
    """
    if not gt_answers:
        raise ValueError("soft_score needs at least one human answer")
    pred, gts = official_forms(answer, gt_answers)
    return _loo_score(sum(g == pred for g in gts), len(gts))


def _loo_score(count: int, total: int) -> float:
    # Leaving out one of the `count` matching answers leaves count-1 matches; leaving out any of the
    # other total-count answers leaves count.
    if total == 1:
        return 0.0
    with_match = count * min(1.0, (count - 1) / 3.0) if count else 0.0
    without = (total - count) * min(1.0, count / 3.0)
    return (with_match + without) / total


def answer_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Training targets: the soft score of every distinct *normalised* human answer (always normalised,
    see the module docstring); answers absent from the dict score 0."""
    gts = [normalize_answer(a) for a in gt_answers]
    counts = Counter(gts)
    return {a: _loo_score(c, len(gts)) for a, c in counts.items()}


@dataclass
class AnswerVocab:
    """The answer classes of the VQA head, most frequent first, and what to write for each.

    Attributes:
        answers: the class names (normalised strings, :func:`normalize_answer`); index i is output
            unit i. Training targets are looked up by these.
        server_answers: per class, the string written into the evaluation server's result file and
            scored by :func:`soft_score`: the class's most frequent raw form, i.e. a string annotators
            actually wrote (``"shell"``, ``"two"``), never a normalised rewrite. Defaults to
            ``answers`` (a vocabulary read from a plain list; see :meth:`with_server_answers`).
        source: where the vocabulary came from (a file, or 'built'), for error messages.
    """

    answers: list[str]
    source: str = "built"
    server_answers: Optional[list[str]] = None

    def __post_init__(self) -> None:
        self._index = {a: i for i, a in enumerate(self.answers)}
        if len(self._index) != len(self.answers):
            raise ValueError(f"{self.source}: the answer vocabulary has duplicate entries")
        self.has_server_answers = self.server_answers is not None
        if self.server_answers is None:
            self.server_answers = list(self.answers)
        if len(self.server_answers) != len(self.answers):
            raise ValueError(f"{self.source}: {len(self.answers)} answers but {len(self.server_answers)} server answers")

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

    def with_server_answers(self, annotation_files: Iterable[PathLike]) -> "AnswerVocab":
        """A copy whose server answers are each class's most frequent raw form in the annotation files
        (classes no annotator spelled keep their class name)."""
        forms = raw_forms(annotation_files)
        server = [_server_form(a, forms[a]) if forms.get(a) else a for a in self.answers]
        return AnswerVocab(list(self.answers), self.source, server)

    def to_json(self) -> dict:
        return {"answers": list(self.answers), "server_answers": list(self.server_answers)}

    def save(self, path: PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=0))

    @classmethod
    def load(cls, path: PathLike) -> "AnswerVocab":
        """Reads ``{"answers": [...], "server_answers": [...]}`` or a plain JSON list of class names
        (then ``has_server_answers`` is False)."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise DataError(path, None, f"malformed JSON: {exc}") from exc
        server = None
        if isinstance(data, dict):
            answers, server = data.get("answers"), data.get("server_answers")
            if server is not None and (not isinstance(server, list) or not all(isinstance(a, str) for a in server)):
                raise DataError(path, "server_answers", "must be a list of strings")
        else:
            answers = data
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise DataError(path, None, "an answer vocabulary must be a JSON list of strings "
                                        "(or {'answers': [...], 'server_answers': [...]})")
        try:
            return cls(answers, source=str(path), server_answers=server)
        except ValueError as exc:
            raise DataError(path, None, str(exc)) from exc


def _most_frequent(counts: Counter) -> str:
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def majority_answer(gt_answers: Sequence[str]) -> str:
    """The most frequent normalised human answer (ties broken alphabetically, for determinism)."""
    return _most_frequent(Counter(normalize_answer(a) for a in gt_answers))


def raw_forms(annotation_files: Iterable[PathLike]) -> dict[str, Counter]:
    """Class (normalised answer) -> Counter of the cleaned raw strings annotators wrote for it, over
    every human answer of the files."""
    forms: dict[str, Counter] = {}
    for path in annotation_files:
        _count_raw_forms(load_annotations(path), forms)
    return forms


def _count_raw_forms(anns: list[dict], forms: dict[str, Counter]) -> None:
    for ann in anns:
        for a in ann["answers"]:
            raw = clean_answer(a["answer"])
            forms.setdefault(normalize_answer(raw), Counter())[raw] += 1


def build_answer_vocab(annotation_files: Iterable[PathLike], top_k: int = 3129) -> AnswerVocab:
    """The ``top_k`` most frequent answers over official VQAv2 annotation files (train and val).

    Frequency = the number of questions whose ``multiple_choice_answer`` (the annotators' majority;
    recomputed from the 10 answers when absent) is that answer after normalisation, as in the
    bottom-up-attention recipe that produced the 3,129-answer set. Ties are broken alphabetically.
    Each class's server answer is its most frequent raw form over all human answers of the files (on a
    tie, the class's own spelling when it is one of them).
    """
    counts: Counter = Counter()
    forms: dict[str, Counter] = {}
    for path in annotation_files:
        anns = load_annotations(path)
        _count_raw_forms(anns, forms)
        for ann in anns:
            mc = ann.get("multiple_choice_answer")
            counts[normalize_answer(mc) if isinstance(mc, str) and mc.strip()
                   else majority_answer([a["answer"] for a in ann["answers"]])] += 1
    counts.pop("", None)
    answers = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    return AnswerVocab(answers, server_answers=[_server_form(a, forms[a]) if forms.get(a) else a for a in answers])


def _server_form(answer: str, forms: Counter) -> str:
    """The most frequent raw form of class ``answer``; on a tie the class's own spelling if it is among
    the tied forms (not "No!" before "no" by ASCII order), else the first alphabetically."""
    return min(forms.items(), key=lambda kv: (-kv[1], kv[0] != answer, kv[0]))[0]


def question_id(value, path: PathLike, item) -> int:
    """A VQA question id, which must be a JSON integer; DataError naming the file and the item otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(path, item, f"question_id must be an integer, got {value!r} ({type(value).__name__})")
    return value


def load_annotations(path: PathLike) -> list[dict]:
    """The ``annotations`` list of an official VQAv2 annotation file, checked item by item: integer
    question ids, each annotated once, each with a non-empty list of string answers."""
    data = load_json(path)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise DataError(path, None, "not a VQA annotation file: no 'annotations' list")
    seen: set[int] = set()
    for i, ann in enumerate(anns):
        qid = ann.get("question_id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        if not isinstance(ann, dict) or "question_id" not in ann or not isinstance(ann.get("answers"), list):
            raise DataError(path, f"annotation #{i} (question {qid})", "annotation needs question_id and an answers list")
        q = question_id(ann["question_id"], path, f"annotation #{i}")
        if q in seen:
            raise DataError(path, f"annotation #{i} (question {q})", "question id annotated twice")
        seen.add(q)
        if not ann["answers"] or not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in ann["answers"]):
            raise DataError(path, f"annotation #{i} (question {q})", "answers must be a non-empty list of {'answer': str}")
    return anns
