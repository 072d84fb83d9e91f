"""A fine-tuned model for use: encoder + task head (+ the VQA answer vocabulary) in one object.

    model = switchbert.load_task_model("runs/vqa")          # a run, its best/ or last/, or a model dir
    model.answer(["what color is the cube?"], [regions])     # VQA: answer strings
    model.score(["a red cube left of a ball"], [regions])    # retrieval: one matching score per pair
    model.locate(["the red cube"], [regions])                # RefCOCO+: the best region and its box

``regions`` are what :class:`switchbert.Processor` takes (region records, or ``image_ids=`` with ``store=``);
every method also takes a ready ``Batch``. The model is in eval mode (dropout off, hard routes), as
``load_pretrained`` returns it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from switchbert.batch import Batch
from switchbert.models.base import VLModel
from switchbert.processor import Processor

TASK_TEXT_LEN = {"vqa": 23, "retrieval": 30, "refexp": 20}
"""The controlled setting's text length per task (``Task.text_len``), used when the run's config is absent."""


@dataclass
class RefExpPrediction:
    """The region an expression refers to.

    Attributes:
        index: the region's position among the image's regions (0-based, the IMG token not counted).
        box: pixel x1, y1, x2, y2 of that region.
        score: its logit.
    """

    index: int
    box: tuple[float, float, float, float]
    score: float


class TaskModel(nn.Module):
    """Encoder + task head, loaded by :meth:`from_pretrained` (see the module docstring).

    Attributes:
        encoder: the ``VLModel``.
        head: ``VQAHead``, ``RetrievalHead`` or ``RefExpHead``.
        task: ``"vqa"``, ``"retrieval"`` or ``"refexp"``.
        answers: VQA: the classifier's answer vocabulary (``AnswerVocab``); None otherwise.
        processor: builds batches with the run's text length.
        source: the checkpoint directory it was read from.
    """

    def __init__(self, encoder: VLModel, head: nn.Module, task: str, answers: Any = None,
                 processor: Optional[Processor] = None, source: str = "") -> None:
        super().__init__()
        self.encoder, self.head, self.task, self.answers = encoder, head, task, answers
        self.processor = processor or Processor(TASK_TEXT_LEN.get(task, 38))
        self.source = source

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: Union[str, Path], map_location: Union[str, torch.device] = "cpu",
                        task: Optional[str] = None) -> "TaskModel":
        """Reads a fine-tuned run directory (its ``best/``, else ``last/``) or checkpoint directory.

        Args:
            path: a run or checkpoint directory (one with ``heads.safetensors``).
            task: the task, when neither the checkpoint's model card nor the run's ``config.yaml`` says.

        Raises:
            FileNotFoundError: no checkpoint, or no task head in it (a pretraining run or a plain model
                directory has none: fine-tune it first).
            ValueError: a head that does not fit, or a task that cannot be told.
        """
        from switchbert.heads.tasks import build_head
        from switchbert.models import load_heads, load_pretrained, resolve_checkpoint
        from switchbert.models.directory import HEADS_NAME

        ckpt = resolve_checkpoint(path)
        if not (ckpt / HEADS_NAME).is_file():
            raise FileNotFoundError(f"{ckpt}: no {HEADS_NAME}: not a fine-tuned checkpoint (a task model needs "
                                    "the task head a `switchbert finetune` run writes)")
        run_config = _run_config(ckpt)
        task = task or _card_task(ckpt) or run_config.get("task")
        if task not in TASK_TEXT_LEN:
            raise ValueError(f"{ckpt}: task {task!r} has no task model (vqa, retrieval, refexp); pass task=")
        encoder = load_pretrained(ckpt, map_location)
        c = encoder.config
        answers = None
        if task == "vqa":
            from switchbert.data.vqa_answers import AnswerVocab

            vocab_file = ckpt / "answer_vocab.json"
            if not vocab_file.is_file():
                raise FileNotFoundError(f"{vocab_file}: a VQA checkpoint needs its answer vocabulary")
            answers = AnswerVocab.load(vocab_file)
        head = build_head(task, pooler_size=c.pooler_size, region_hidden_size=c.region_hidden_size_,
                          num_answers=len(answers) if answers is not None else 1, layer_norm_eps=c.layer_norm_eps,
                          initializer_range=c.initializer_range, dropout=c.hidden_dropout)
        load_heads(head, ckpt)
        data = run_config.get("data", {})
        processor = Processor(int(data.get("max_text_len") or TASK_TEXT_LEN[task]), int(data.get("max_regions") or 36))
        return cls(encoder, head.to(map_location), task, answers, processor, str(ckpt)).eval()

    # -- prediction -----------------------------------------------------------------------------
    def batch(self, texts: Union[str, Sequence[str], Batch], regions: Any = None, *, image_ids: Sequence[Any] = (),
              store: Any = None) -> Batch:
        """A batch on the model's device from texts and regions (or image ids in a feature store)."""
        if isinstance(texts, Batch):
            batch = texts
        elif store is not None:
            batch = self.processor.from_store(texts, store, image_ids)
        elif regions is None:
            raise ValueError("give regions (one per text) or image_ids= with store=")
        else:
            batch = self.processor(texts, regions)
        return batch.to(next(self.encoder.parameters()).device)

    @torch.no_grad()
    def forward(self, batch: Batch) -> Tensor:
        """The head's output: VQA (B, A) answer logits, retrieval (B,) scores, RefExp (B, N) region logits."""
        return self.head(self.encoder(batch))

    def answer(self, questions: Union[str, Sequence[str], Batch], regions: Any = None, **kw: Any) -> list[str]:
        """VQA: the arg-max answer of each question, as the evaluation server wants it written."""
        from switchbert.metrics.vqa import predict_answers

        self._need("vqa", "answer")
        return predict_answers(self(self.batch(questions, regions, **kw)).float().cpu(), self.answers)

    def score(self, captions: Union[str, Sequence[str], Batch], regions: Any = None, **kw: Any) -> Tensor:
        """Retrieval: (B,) matching scores of (caption i, image i); higher = a better match."""
        self._need("retrieval", "score")
        return self(self.batch(captions, regions, **kw)).float().cpu()

    def locate(self, expressions: Union[str, Sequence[str]], regions: Any = None, *, image_ids: Sequence[Any] = (),
               store: Any = None) -> list[RefExpPrediction]:
        """RefCOCO+: the region each expression refers to (the arg-max over the image's real regions)."""
        from switchbert.data.features import read_regions

        self._need("refexp", "locate")
        if store is not None:
            regions = [read_regions(store, i, self.processor.max_regions) for i in image_ids]
        batch, boxes_px = self.processor.batch_with_boxes(expressions, regions)
        logits = self(self.batch(batch)).float().cpu()
        logits = logits.masked_fill(~batch.region_mask, float("-inf"))
        if not batch.region_mask.any(dim=1).all():
            raise ValueError("locate: every image needs at least one region")
        best = logits.argmax(dim=1)
        return [RefExpPrediction(int(i), tuple(float(x) for x in boxes_px[b, i].tolist()), float(logits[b, i]))
                for b, i in enumerate(best.tolist())]

    def _need(self, task: str, method: str) -> None:
        if self.task != task:
            raise ValueError(f"{method}() is for a {task} model; {self.source} holds a {self.task} model")


def load_task_model(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu",
                    task: Optional[str] = None) -> TaskModel:
    """``TaskModel.from_pretrained``: a fine-tuned run or checkpoint as encoder + head (+ answers)."""
    return TaskModel.from_pretrained(path, map_location, task)


def _card_task(ckpt: Path) -> Optional[str]:
    """The task the checkpoint's model card says it was trained for."""
    card = ckpt / "README.md"
    if card.is_file():
        m = re.search(r"trained for: (\w+)", card.read_text(encoding="utf-8", errors="replace"))
        if m:
            return m.group(1)
    return None


def _run_config(ckpt: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` (beside ``best/``/``last/``), as a plain dict; {} when there is none."""
    path = ckpt.parent / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
