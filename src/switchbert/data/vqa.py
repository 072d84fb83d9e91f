"""VQAv2 from the official question and annotation JSONs, with soft-score targets (docs/method.md §7).

Dimension legend: B batch, T text tokens (<= 23), N regions (<= 36), A answers (3,129 by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from switchbert.batch import Batch
from switchbert.data.errors import BadItemPolicy, DataError, DataWarning, PathLike, load_json
from switchbert.data.features import FeatureStore, record_regions
from switchbert.data.index import StringTable
from switchbert.data.loader import TensorFields, drop_skipped, make_batch
from switchbert.data.regions import Regions
from switchbert.data.tokens import caption_tokens, with_specials
from switchbert.data.vqa_answers import AnswerVocab, answer_scores, load_annotations, question_id

OOV_POLICIES = ("keep", "drop", "error")


@dataclass
class VQAExample:
    """One question.

    Attributes:
        question_id, image_id: official ids.
        text_ids: (T,) int64 question ids.
        regions: the image's regions.
        answer_index: (k,) int64 vocabulary indices of the human answers in the vocabulary.
        answer_score: (k,) float32 their soft scores; empty without annotations (test split).
    """

    question_id: int
    image_id: str
    text_ids: np.ndarray
    regions: Regions
    answer_index: np.ndarray
    answer_score: np.ndarray


@dataclass
class VQALabels(TensorFields):
    """Soft-score targets.

    Attributes:
        scores: (B, A) float official VQA accuracy of each vocabulary answer (0 for unlisted ones);
            use with BCE (times A, docs/method.md §7). All zeros on a split without annotations.
        question_ids: (B,) long, for the evaluation-server results file.
    """

    scores: Tensor
    question_ids: Tensor
    image_ids: list[str] = field(default_factory=list)


def load_questions(path: PathLike) -> list[dict]:
    """The ``questions`` list of an official ``v2_OpenEnded_mscoco_*_questions.json``.

    Checked for the whole file: every question id is an integer and appears once (a repeated id
    would silently get the first one's answers). Per-item content (image id, text) is checked by
    :class:`VQADataset`, so ``skip_bad`` can skip those.
    """
    data = load_json(path)
    qs = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(qs, list):
        raise DataError(path, None, "not a VQA questions file: no 'questions' list")
    first: dict[int, int] = {}
    for i, q in enumerate(qs):
        if not isinstance(q, dict) or "question_id" not in q:
            raise DataError(path, f"question #{i}", "question needs question_id, image_id and question")
        qid = question_id(q["question_id"], path, f"question #{i}")
        if qid in first:
            other = qs[first[qid]]
            same = other.get("question") == q.get("question") and other.get("image_id") == q.get("image_id")
            what = "the same question" if same else f"another question ({other.get('question')!r} vs {q.get('question')!r})"
            raise DataError(path, f"question #{i} (id {qid})", f"question id repeated (first at #{first[qid]}, {what})")
        first[qid] = i
    return qs


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class VQADataset(Dataset):
    """VQAv2 questions with soft-score targets.

    Args:
        questions_path: official questions JSON, or a list of them (train + val for the trainval
            protocol).
        annotations_path: the matching annotations JSON (or list), or None for test splits (targets
            all zero).
        store: region features keyed by COCO image id.
        tokenizer: from :func:`~switchbert.data.tokenizer.load_tokenizer`.
        vocab: the answer vocabulary (:func:`~switchbert.data.vqa_answers.build_answer_vocab`).
        max_text_len: question length cap incl. [CLS]/[SEP] (23 in the controlled setting).
        oov: questions none of whose human answers is in the vocabulary: ``keep`` them with an all-zero
            target (standard for training and required for honest evaluation; counted and warned),
            ``drop`` them (counted and warned), or ``error`` (DataError naming file and question).
        skip_bad: skip bad items (counted, warned) instead of raising.
        include_ids: keep only these question ids (a held-out minival).
        exclude_ids: leave these question ids out (train + val minus minival).
    """

    def __init__(
        self,
        questions_path,
        annotations_path,
        store: FeatureStore,
        tokenizer,
        vocab: AnswerVocab,
        max_text_len: int = 23,
        max_regions: int = 36,
        oov: str = "keep",
        skip_bad: bool = False,
        include_ids: Optional[set[int]] = None,
        exclude_ids: Optional[set[int]] = None,
    ) -> None:
        if oov not in OOV_POLICIES:
            raise ValueError(f"oov must be one of {OOV_POLICIES}, got {oov!r}")
        self.store, self.tokenizer, self.vocab = store, tokenizer, vocab
        self.max_text_len, self.max_regions = max_text_len, max_regions
        self.policy = BadItemPolicy(skip_bad)
        q_files = _as_list(questions_path)
        a_files = [None] * len(q_files) if annotations_path is None else _as_list(annotations_path)
        if len(a_files) != len(q_files):
            raise ValueError(f"VQADataset: {len(q_files)} question files but {len(a_files)} annotation files")
        self.items: list[tuple[int, str, str, np.ndarray, np.ndarray]] = []
        self.num_oov = 0
        seen: dict[int, str] = {}
        for q_file, a_file in zip(q_files, a_files):
            self._load(q_file, a_file, oov, include_ids, exclude_ids, seen)
        # Tokenised once here (the Rust tokenizer, in batches), not per sample per epoch: ~70 us a question.
        self.tokens = caption_tokens(StringTable.from_strings([q for _, _, q, _, _ in self.items]), tokenizer,
                                     max_text_len)
        if self.num_oov and oov != "error":
            import warnings

            action = "kept with zero targets" if oov == "keep" else "dropped"
            warnings.warn(f"{', '.join(map(str, q_files))}: {self.num_oov} questions have no answer in the "
                          f"vocabulary; {action}", DataWarning, stacklevel=2)

    def _load(self, questions_path, annotations_path, oov, include_ids, exclude_ids, seen: dict[int, str]) -> None:
        vocab, store = self.vocab, self.store
        anns = {}
        if annotations_path is not None:
            anns = {a["question_id"]: a for a in load_annotations(annotations_path)}
        for i, q in enumerate(load_questions(questions_path)):
            qid = q["question_id"]  # an integer, unique in this file (load_questions)
            if include_ids is not None and qid not in include_ids:
                continue
            if exclude_ids is not None and qid in exclude_ids:
                continue
            if qid in seen:
                raise DataError(questions_path, f"question #{i} (id {qid})", f"question id also in {seen[qid]}")
            seen[qid] = str(questions_path)
            try:
                if not {"question_id", "image_id", "question"} <= q.keys():
                    raise DataError(questions_path, qid, "question needs question_id, image_id and question")
                if not isinstance(q["question"], str) or not q["question"].strip():
                    raise DataError(questions_path, qid, "empty question")
                iid = str(q["image_id"])
                if iid not in store:
                    raise DataError(questions_path, qid, f"missing image id {iid}: not in the feature store {store.path}")
                index, score = np.zeros(0, np.int64), np.zeros(0, np.float32)
                if annotations_path is not None:
                    ann = anns.get(qid)
                    if ann is None:
                        raise DataError(annotations_path, qid, "question has no annotation")
                    if str(ann.get("image_id", iid)) != iid:
                        raise DataError(annotations_path, qid, f"annotation image {ann['image_id']} != question image {iid}")
                    index, score = self._targets(ann["answers"])
                    if len(index) == 0:
                        self.num_oov += 1
                        if oov == "error":
                            raise DataError(annotations_path, qid, f"answer outside the vocabulary ({vocab.source}): "
                                            f"none of {[a['answer'] for a in ann['answers']][:10]} is in it")
                        if oov == "drop":
                            continue
            except DataError as err:
                self.policy.handle(err)
                continue
            self.items.append((qid, iid, q["question"], index, score))

    def _targets(self, answers: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [(self.vocab.get(a), s) for a, s in answer_scores([x["answer"] for x in answers]).items()]
        pairs = [(i, s) for i, s in pairs if i is not None and s > 0]
        return np.array([i for i, _ in pairs], np.int64), np.array([s for _, s in pairs], np.float32)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Optional[VQAExample]:
        with self.store.pages() as read:
            example = self._example(index, read)
            if example is not None and not example.regions.features.flags.writeable:
                example.regions.features = example.regions.features.copy()  # the sample's own, off the pages
        return example

    def read_batch(self, indices: Sequence[int]) -> tuple[Batch, VQALabels]:
        """``collate([self[i] for i in indices])``, equal to it, each image's features copied once: from
        the store's pages into the batch (the batch path of ``make_dataloader``; see ``CaptionPairsDataset``)."""
        with self.store.pages() as read:
            return self.collate([self._example(int(i), read) for i in indices])

    def _example(self, index: int, read) -> Optional[VQAExample]:
        qid, iid, _, ans_index, ans_score = self.items[index]
        try:  # VQA does not use the detector's class distribution: not read, not copied
            regions = record_regions(read(iid, cls_prob=False), self.store.path, self.max_regions)
        except DataError as err:
            self.policy.handle(err)
            return None
        return VQAExample(qid, iid, with_specials(self.tokens.row(index)), regions, ans_index, ans_score)

    def collate(self, examples: list[Optional[VQAExample]]) -> tuple[Batch, VQALabels]:
        return collate_vqa(examples, len(self.vocab))


def collate_vqa(examples: list[Optional[VQAExample]], num_answers: int) -> tuple[Batch, VQALabels]:
    """Pads examples into a :class:`Batch` and dense :class:`VQALabels` (skipped items dropped)."""
    examples = drop_skipped(examples)
    if not examples:
        raise DataError(None, None, "every item of the batch was skipped as bad")
    batch, _ = make_batch([e.text_ids for e in examples], [e.regions for e in examples])
    scores = torch.zeros((len(examples), num_answers), dtype=torch.float32)
    for i, e in enumerate(examples):
        scores[i, torch.from_numpy(e.answer_index)] = torch.from_numpy(e.answer_score)
    qids = torch.tensor([e.question_id for e in examples], dtype=torch.long)
    return batch, VQALabels(scores, qids, [e.image_id for e in examples])
