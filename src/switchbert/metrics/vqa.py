"""VQA accuracy (official normalisation, leave-one-out over the 10 human answers) and the result file.

The score is the official one (``switchbert.data.vqa_answers.soft_score``): answers are normalised
only when the ten human answers are not all the same string, exactly as the official evaluator does.
The training targets normalise always (``answer_scores``); they decide what the classifier learns,
never the reported number. Metrics never touch a model: they take predicted answer strings (or logits
plus the answer vocabulary, whose *server answers*, raw strings annotators wrote, are what is scored
and written for the evaluation server).

All accuracies are percentages (0-100), like the paper's tables.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from switchbert.io import atomic_write_text

SoftScoreFn = Callable[[str, Sequence[str]], float]


def vqa_question_scores(
    predictions: Sequence[str],
    human_answers: Sequence[Sequence[str]],
    *,
    score: Optional[SoftScoreFn] = None,
) -> np.ndarray:
    """Per-question VQA accuracy in [0, 1].

    Args:
        predictions: (Q,) predicted answer strings.
        human_answers: (Q,) lists of the human answers of each question (10 in VQAv2), raw.
        score: ``score(answer, human_answers) -> float``; default the official
            ``switchbert.data.vqa_answers.soft_score``: when the human answers disagree it normalises
            both sides (punctuation, digits, articles, the official contraction table), else it
            compares exact strings; then it averages min(#matches / 3, 1) over the leave-one-out
            subsets of the human answers.

    Returns:
        (Q,) float64 array.
    """
    if len(predictions) != len(human_answers):
        raise ValueError(
            f"vqa accuracy: {len(predictions)} predictions but {len(human_answers)} lists of human answers"
        )
    if score is None:
        # Imported here so the rest of the metrics package does not depend on the data layer.
        from switchbert.data.vqa_answers import soft_score as score
    out = np.empty(len(predictions), dtype=np.float64)
    for i, (pred, humans) in enumerate(zip(predictions, human_answers)):
        if isinstance(humans, str) or len(humans) == 0:
            raise ValueError(f"vqa accuracy: question {i} needs a non-empty list of human answers, got {humans!r}")
        out[i] = score(str(pred), list(humans))
    return out


def vqa_accuracy(
    predictions: Sequence[str],
    human_answers: Sequence[Sequence[str]],
    *,
    score: Optional[SoftScoreFn] = None,
) -> float:
    """Official VQA accuracy in percent: the mean per-question score × 100.

    See ``vqa_question_scores`` for the arguments. An empty question list is a ``ValueError``.
    """
    if len(predictions) == 0:
        raise ValueError("vqa accuracy of an empty prediction list is undefined")
    return 100.0 * float(vqa_question_scores(predictions, human_answers, score=score).mean())


def vqa_accuracy_by_group(scores: Union[Sequence[float], np.ndarray], groups: Sequence[str]) -> dict[str, float]:
    """Mean per-question score × 100 per group, as the official evaluator's ``perQuestionType`` and
    ``perAnswerType`` (there rounded to 2 decimals; here not).

    Args:
        scores: (Q,) per-question VQA accuracy in [0, 1] (``vqa_question_scores``).
        groups: (Q,) each question's group, e.g. its ``answer_type`` ("yes/no", "number", "other").

    Returns:
        {group: accuracy in %}, groups sorted.
    """
    if len(scores) != len(groups):
        raise ValueError(f"vqa accuracy by group: {len(scores)} scores but {len(groups)} groups")
    sums: dict[str, list[float]] = {}
    for s, g in zip(scores, groups):
        sums.setdefault(str(g), []).append(float(s))
    return {g: 100.0 * sum(v) / len(v) for g, v in sorted(sums.items())}


def predict_answers(logits: Union[Tensor, np.ndarray], answer_vocab: Union[Sequence[str], Any]) -> list[str]:
    """The arg-max answer string of each row.

    Args:
        logits: (B, A) answer logits (``VQAHead``).
        answer_vocab: (A,) answer strings in the classifier's order, or an ``AnswerVocab``, whose
            ``server_answers`` (each class's most frequent raw form) are returned, never the
            normalised class names (anything with an ``answers`` list and no ``server_answers``
            gives its ``answers``).
    """
    if isinstance(answer_vocab, Mapping):  # list(dict) would be its keys, in whatever order they were added
        raise TypeError("predict_answers: answer_vocab is a dict; give the answers as a list in the classifier's "
                        "order (e.g. sorted(d, key=d.get) for answer -> index), or an AnswerVocab "
                        "(AnswerVocab.load('RUN/best/answer_vocab.json'))")
    answer_vocab = list(getattr(answer_vocab, "server_answers", None) or getattr(answer_vocab, "answers", answer_vocab))
    logits = torch.as_tensor(logits)
    if logits.dim() != 2 or logits.shape[1] != len(answer_vocab):
        raise ValueError(
            f"predict_answers: logits must be (B, A={len(answer_vocab)}) for this answer vocabulary, "
            f"got {tuple(logits.shape)}"
        )
    return [answer_vocab[i] for i in logits.argmax(dim=1).tolist()]


def vqa_target_score(logits: Union[Tensor, np.ndarray], targets: Union[Tensor, np.ndarray]) -> float:
    """Validation score from soft targets in percent: mean target score of each row's arg-max answer.

    This is what VOLTA tracks while fine-tuning: it equals the official accuracy when every human
    answer is inside the answer vocabulary, and is a lower bound otherwise.

    Args:
        logits: (B, A).
        targets: (B, A) soft scores.
    """
    logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
    if logits.dim() != 2 or tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(
            f"vqa_target_score: logits and targets must share a (B, A) shape, got "
            f"{tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("vqa_target_score of an empty batch is undefined")
    picked = targets.gather(1, logits.argmax(dim=1, keepdim=True))
    return 100.0 * float(picked.double().mean())


def write_vqa_results(
    path: Union[str, os.PathLike], question_ids: Sequence[int], answers: Sequence[str]
) -> Path:
    """Writes the evaluation server's result file: a JSON list of {"question_id": int, "answer": str}.

    The file is written atomically (temporary file in the same folder, fsync, rename), so an
    interrupted run never leaves a truncated file for upload.

    Args:
        path: destination, e.g. ``vqav2_test-dev_results.json``.
        question_ids: (Q,) integer question ids, each once.
        answers: (Q,) predicted answer strings.

    Returns:
        the path written.
    """
    if len(question_ids) != len(answers):
        raise ValueError(f"write_vqa_results: {len(question_ids)} question ids but {len(answers)} answers")
    ids = [int(q) for q in question_ids]
    dupes = sorted(q for q, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ValueError(f"write_vqa_results: duplicate question ids {dupes[:10]}")
    records = [{"question_id": q, "answer": str(a)} for q, a in zip(ids, answers)]
    path = Path(path)
    atomic_write_text(path, json.dumps(records))
    return path


