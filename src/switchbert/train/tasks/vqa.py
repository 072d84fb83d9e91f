"""VQAv2: BCE on soft answer scores; the official VQA accuracy and the evaluation server's result
files (docs/method.md §7, docs/heads_and_metrics.md).

Dimension legend: B batch, A answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from switchbert.data import AnswerVocab, VQADataset, build_answer_vocab
from switchbert.data.vqa_answers import load_annotations
from switchbert.heads import build_head
from switchbert.heads.losses import vqa_bce_loss
from switchbert.io import atomic_write_json
from switchbert.metrics import vqa_accuracy_by_group, vqa_question_scores, write_vqa_results
from switchbert.models.base import VLModel
from switchbert.train.config import ConfigError
from switchbert.train.distributed import all_gather_objects
from switchbert.train.tasks.base import HELDOUT, StepOutput, Task, heldout_images

VQA_VOCAB_FILE = "answer_vocab.json"

VQA_PROTOCOLS = ("train", "trainval")
VQA_TEST_SPLITS = {"test": "vqa_test_questions", "test-dev": "vqa_test_questions",
                   "test-std": "vqa_test_std_questions"}


class VQATask(Task):
    """VQAv2 (docs/method.md §7). The answer vocabulary is built from train + val annotations (or read from
    ``data.vqa_answer_vocab``) and saved beside every checkpoint, so evaluation uses the same one.

    Protocols (``data.vqa_protocol``):
        train     train on train; ``val`` is the held-out split.
        trainval  the paper's and VOLTA's: train on train + val minus ``minival`` (the last
                  ``data.vqa_minival_size`` val questions in question-id order, VOLTA's definition),
                  select the best epoch on ``minival``, report test-dev and test-std through the
                  server. ``val`` overlaps the training data and is refused.
    Splits: train, val, minival, test-dev (``test`` is the same), test-std. Test splits write
    ``vqa_results_<split>.json`` for the server and return no metric.
    """

    name = "vqa"
    metric_names = ("accuracy", "target_score")
    default_best = "accuracy"
    required_files = ("features", "vqa_train_questions", "vqa_train_annotations", "vqa_val_questions",
                      "vqa_val_annotations")
    # null vocabulary: the top vqa_num_answers of train + val; test questions: the server's result files
    optional_files = ("vqa_test_questions", "vqa_answer_vocab")
    lazy_files = ("vqa_test_std_questions",)
    text_len = 23

    def __init__(self, config, model_config=None, ctx=None) -> None:
        super().__init__(config, model_config, ctx)
        d = config.data
        if d.vqa_protocol not in VQA_PROTOCOLS:
            raise ConfigError(f"data.vqa_protocol must be one of {', '.join(VQA_PROTOCOLS)}, got {d.vqa_protocol!r}")
        if d.vqa_minival_size < 1:
            raise ConfigError(f"data.vqa_minival_size must be >= 1, got {d.vqa_minival_size}")
        self.vocab: Optional[AnswerVocab] = None
        self._minival: Optional[set[int]] = None

    @property
    def test_splits(self) -> tuple[str, ...]:  # type: ignore[override]
        held_out = "minival" if self.config.data.vqa_protocol == "trainval" else "val"
        return (held_out, "test-dev")

    def _annotation_files(self) -> list[Path]:
        d = self.config.data
        return [p for p in (d.path("vqa_train_annotations"), d.path("vqa_val_annotations")) if p is not None and p.is_file()]

    def _ensure_vocab(self) -> AnswerVocab:
        if self.vocab is None:
            d = self.config.data
            if d.vqa_answer_vocab is not None:
                self.vocab = AnswerVocab.load(d.path("vqa_answer_vocab"))
            else:
                self.vocab = build_answer_vocab([d.path("vqa_train_annotations"), d.path("vqa_val_annotations")],
                                                top_k=d.vqa_num_answers)
            self._fill_server_answers()
        return self.vocab

    def _fill_server_answers(self) -> None:
        # A plain list of classes (BUTD's, an old checkpoint) says nothing of how annotators spelled
        # them: take each class's most frequent raw form from the annotations we have.
        if not self.vocab.has_server_answers and self._annotation_files():
            self.vocab = self.vocab.with_server_answers(self._annotation_files())

    def save_assets(self, directory: Path) -> None:
        atomic_write_json(Path(directory) / VQA_VOCAB_FILE, self._ensure_vocab().to_json())

    def load_assets(self, directory: Path) -> None:
        path = Path(directory) / VQA_VOCAB_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: a VQA checkpoint needs its answer vocabulary")
        self.vocab = AnswerVocab.load(path)
        self._fill_server_answers()

    def minival_ids(self) -> set[int]:
        """The held-out question ids: the last ``vqa_minival_size`` val questions by id (VOLTA)."""
        if self._minival is None:
            from switchbert.data.vqa import load_questions

            d = self.config.data
            ids = sorted(q["question_id"] for q in load_questions(d.path("vqa_val_questions")))
            if len(ids) <= d.vqa_minival_size and d.vqa_protocol == "trainval":
                raise ConfigError(f"data.vqa_minival_size={d.vqa_minival_size} leaves no val question to train on "
                                  f"({len(ids)} in {d.path('vqa_val_questions')})")
            self._minival = set(ids[-d.vqa_minival_size:])
        return self._minival

    def _split_keys(self, split: str) -> tuple[tuple[str, ...], Optional[tuple[str, ...]]]:
        """(question keys, annotation keys or None for test questions) of ``split``."""
        trainval = self.config.data.vqa_protocol == "trainval"
        if split in ("train", HELDOUT):  # the held-out images are training images
            if trainval:
                return (("vqa_train_questions", "vqa_val_questions"),
                        ("vqa_train_annotations", "vqa_val_annotations"))
            return ("vqa_train_questions",), ("vqa_train_annotations",)
        if split == "val":
            if trainval:
                raise ConfigError("VQA split 'val' overlaps the training data under data.vqa_protocol=trainval "
                                  "(train + val minus minival); evaluate 'minival', or train with vqa_protocol=train")
            return ("vqa_val_questions",), ("vqa_val_annotations",)
        if split == "minival":
            return ("vqa_val_questions",), ("vqa_val_annotations",)
        if split in VQA_TEST_SPLITS:
            return (VQA_TEST_SPLITS[split],), None
        raise ConfigError(f"unknown VQA split {split!r}; choose train, val, minival, test-dev, test-std "
                          f"or {HELDOUT} (with data.val_from_train)")

    def split_files(self, split: str) -> tuple[str, ...]:
        questions, annotations = self._split_keys(split)
        return questions + (annotations or ())

    def _files(self, split: str) -> tuple[list[Path], Optional[list[Path]]]:
        d = self.config.data
        questions, annotations = self._split_keys(split)
        if split in VQA_TEST_SPLITS and getattr(d, questions[0]) is None:
            raise ConfigError(f"VQA split {split!r} needs data.{questions[0]}")
        return [d.path(k) for k in questions], None if annotations is None else [d.path(k) for k in annotations]

    def heldout_question_ids(self) -> set[int]:
        """Questions of the held-out training images (``data.val_from_train``); empty when off."""
        d = self.config.data
        if d.val_from_train <= 0:
            return set()
        if getattr(self, "_heldout_qids", None) is None:
            from switchbert.data.vqa import load_questions

            minival = self.minival_ids() if d.vqa_protocol == "trainval" else set()
            questions = [q for path in self._files("train")[0] for q in load_questions(path)
                         if q["question_id"] not in minival]
            held = heldout_images((q["image_id"] for q in questions), d.val_from_train, d.val_from_train_seed)
            self._heldout_qids = {q["question_id"] for q in questions if str(q["image_id"]) in held}
        return self._heldout_qids

    def dataset(self, split: str, answers: bool = True) -> VQADataset:
        """The questions of ``split`` under ``data.vqa_protocol``: train (minus minival under trainval,
        minus the held-out images with val_from_train), val, minival, heldout, test-dev / test-std.

        Args:
            answers: False reads no annotations and no answer vocabulary (route analysis needs none).
        """
        d = self.config.data
        self._check_heldout(split)
        questions, annotations = self._files(split)
        include = exclude = None
        if split == "minival":
            include = self.minival_ids()
        elif split == HELDOUT:
            include = self.heldout_question_ids()
        elif split == "train":
            exclude = (self.minival_ids() if d.vqa_protocol == "trainval" else set()) | self.heldout_question_ids()
            exclude = exclude or None
        vocab = self._ensure_vocab() if answers else AnswerVocab([])
        return VQADataset(questions, annotations if answers else None, self.store, self.tokenizer, vocab,
                          d.max_text_len, d.max_regions, oov="keep", skip_bad=d.skip_bad,
                          include_ids=include, exclude_ids=exclude)

    def analysis_split(self, split: str) -> str:
        # Under trainval, val was trained on: its held-out part is minival.
        return "minival" if split == "val" and self.config.data.vqa_protocol == "trainval" else split

    def analysis_dataset(self, split: str) -> VQADataset:
        return self.dataset(split, answers=False)

    def train_dataset(self) -> Dataset:
        return self.dataset("train")

    def build_heads(self, model: VLModel) -> nn.Module:
        c = model.config
        return build_head("vqa", pooler_size=c.pooler_size, num_answers=len(self._ensure_vocab()),
                          layer_norm_eps=c.layer_norm_eps, initializer_range=c.initializer_range,
                          dropout=c.hidden_dropout)

    def step(self, model, heads, batch, labels) -> StepOutput:
        output = model(batch, validate=False)
        loss = vqa_bce_loss(heads(output), labels.scores)
        return StepOutput(loss, {}, output.routes)

    def evaluate(self, model, heads, split, ectx) -> dict[str, float]:
        dataset = self.dataset(split)
        rows: list[tuple[int, int, float]] = []  # question id, predicted answer index, its target score
        with torch.no_grad(), ectx.autocast():
            for batch, labels in self._eval_batches(dataset, ectx, f"VQA {split}"):
                logits = heads(model(batch)).float()
                pred = logits.argmax(dim=1)
                picked = labels.scores.gather(1, pred[:, None]).squeeze(1)
                rows.extend(zip(labels.question_ids.tolist(), pred.tolist(), picked.tolist()))
        rows = sorted(r for part in all_gather_objects(rows, ectx.dist) for r in part)
        qids = [r[0] for r in rows]
        # What annotators wrote for each class (its most frequent raw form): the server scores these
        # strings with the official rule, which does not normalise when the humans agree.
        answers = [self.vocab.server_answers[r[1]] for r in rows]
        name = "test-dev" if split == "test" else split
        if ectx.out_dir is not None and ectx.dist.is_main:
            write_vqa_results(Path(ectx.out_dir) / f"vqa_results_{name}.json", qids, answers)
        _, annotations = self._files(split)
        if annotations is None:
            return {}  # test questions: only the server can score the result file
        anns = {a["question_id"]: a for path in annotations for a in load_annotations(path)}
        if not qids:
            raise ValueError(f"VQA {split}: the split has no questions to score")
        scores = vqa_question_scores(answers, [[x["answer"] for x in anns[q]["answers"]] for q in qids])
        accuracy = 100.0 * float(scores.mean())  # vqa_accuracy's definition, from the scores kept here
        if ectx.out_dir is not None and ectx.dist.is_main:
            # The official evaluator's breakdown, beside the server file (docs/heads_and_metrics.md).
            breakdown: dict[str, Any] = {"overall": accuracy}
            for key, attr in (("perAnswerType", "answer_type"), ("perQuestionType", "question_type")):
                if all(attr in anns[q] for q in qids):
                    breakdown[key] = vqa_accuracy_by_group(scores, [anns[q][attr] for q in qids])
            atomic_write_json(Path(ectx.out_dir) / f"vqa_accuracy_{name}.json", breakdown)
        return {"accuracy": accuracy, "target_score": 100.0 * float(np.mean([r[2] for r in rows]))}
