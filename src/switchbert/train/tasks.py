"""One small class per objective: its datasets, its heads, its loss, and its evaluation (docs/method.md §6-§7).

    pretrain   Conceptual Captions pairs; MLM + MRC-KL + ITM; validation loss
    vqa        VQAv2; BCE on soft scores; official VQA accuracy + the evaluation server's result file
    retrieval  Flickr30k; 4-way cross-entropy; R@1/5/10 both directions over all pairs of a split
    refexp     RefCOCO+; BCE against region IoU; accuracy per split

A task never owns the model: the trainer passes the model and the heads in. Evaluation runs on this
process's contiguous share of the split and gathers the per-sample results on every process, so the
metrics are those of the whole split whatever the number of processes.

Dimension legend: B batch, T text tokens, N real regions, A answers, K = 4 retrieval candidates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from switchbert.batch import Batch
from switchbert.config import ModelConfig
from switchbert.data import (AnswerVocab, CaptionPairsDataset, RefCOCODataset, RetrievalEvalDataset,
                             RetrievalTrainDataset, VQADataset, build_answer_vocab, load_tokenizer,
                             make_dataloader, open_feature_store)
from switchbert.data.vqa_answers import load_annotations
from switchbert.heads import build_head, pretrain_heads_for
from switchbert.heads.losses import (ignore_mismatched, pretrain_loss, refexp_bce_loss, retrieval_4way_loss,
                               vqa_bce_loss)
from switchbert.io import atomic_write_json
from switchbert.metrics import (refexp_correct, retrieval_recall, vqa_accuracy_by_group, vqa_question_scores,
                                write_vqa_results)
from switchbert.models.base import VLModel
from switchbert.outputs import LayerRoute
from switchbert.train.config import ConfigError, ExperimentConfig
from switchbert.train.distributed import DistContext, all_gather_objects, global_count_denominator, shard_range

VQA_VOCAB_FILE = "answer_vocab.json"


@dataclass
class StepOutput:
    """One micro-batch's forward pass.

    Attributes:
        loss: scalar objective (float32).
        parts: named scalar components for logging (detached).
        routes: the encoder's per-layer routes (detached; logged). Nothing else of the encoder output is
            returned: DDP looks for unused parameters from the forward's outputs, so an output tensor the
            loss does not use (a region-only head leaves ``pooled`` unused) would hide them.
    """

    loss: Tensor
    parts: dict[str, Tensor]
    routes: tuple[LayerRoute, ...] = ()


@dataclass
class EvalContext:
    """What an evaluation needs besides the model."""

    dist: DistContext
    batch_size: int
    progress: bool = False
    out_dir: Optional[Path] = None  # where result files go (rank 0 writes)
    max_images: int = 0  # retrieval: score only the first N images of the split (0 = all)
    autocast: Any = field(default_factory=lambda: contextlib.nullcontext)


HELDOUT = "heldout"
"""The split of training images held out by ``data.val_from_train`` (every task but pretraining)."""


def heldout_images(image_ids: Any, fraction: float, seed: int) -> set[str]:
    """The images ``data.val_from_train`` holds out of training: ``round(fraction * n)`` of the distinct
    ``image_ids`` (at least one, and at least one left to train on), chosen by a seeded hash of each id.

    Whole images are held out, so no question, caption or expression of a held-out image is trained on.
    The choice depends only on the set of ids, ``fraction`` and ``seed``: not on their order, the run's
    ``train.seed``, the number of processes or the library's random streams.
    """
    import hashlib

    ids = sorted({str(i) for i in image_ids})
    if fraction <= 0 or not ids:
        return set()
    if len(ids) < 2:
        raise ConfigError(f"data.val_from_train: {len(ids)} training image(s); need at least 2 to hold one out")
    k = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    return set(ranked[:k])


class Task:
    """Base class. Subclasses set the class attributes and implement the four methods."""

    name: str = ""
    metric_names: tuple[str, ...] = ()
    default_best: str = ""
    lower_is_better: frozenset[str] = frozenset()
    test_splits: tuple[str, ...] = ()
    # False when the loss leaves some parameters without a gradient (DDP must then look for them).
    uses_every_parameter: bool = True

    def __init__(self, config: ExperimentConfig, model_config: ModelConfig, ctx: DistContext) -> None:
        self.config, self.model_config, self.ctx = config, model_config, ctx
        d = config.data
        self.tokenizer = load_tokenizer()
        self.store = open_feature_store(d.path("features"))
        if self.store.feat_dim is not None and self.store.feat_dim != model_config.region_feat_dim:
            raise ConfigError(
                f"data.features: {self.store.path} has {self.store.feat_dim}-d region features but model "
                f"{model_config.name!r} expects region_feat_dim={model_config.region_feat_dim} "
                f"(set model.overrides.region_feat_dim or use other features)"
            )

    # -- to implement ----------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def build_heads(self, model: VLModel) -> nn.Module:
        raise NotImplementedError

    def step(self, model: nn.Module, heads: nn.Module, batch: Batch, labels: Any) -> StepOutput:
        """One training forward pass.

        ``batch`` must already be validated: the trainer checks it on the host before the copy to the
        device, and the step calls ``model(batch, validate=False)``, because ``Batch.validate`` on device
        tensors makes the host wait for the GPU (issue 7).
        """
        raise NotImplementedError

    def evaluate(self, model: VLModel, heads: nn.Module, split: str, ectx: EvalContext) -> dict[str, float]:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    @property
    def val_split(self) -> str:
        """The split validated after each epoch (and the best checkpoint chosen on): ``eval.val_split``,
        except that with ``data.val_from_train`` the default ``val`` becomes the held-out training images."""
        split = self.config.eval.val_split
        return HELDOUT if self.config.data.val_from_train > 0 and split == "val" else split

    def _check_heldout(self, split: str) -> None:
        if split == HELDOUT and self.config.data.val_from_train <= 0:
            raise ConfigError(f"split {HELDOUT!r} exists only with data.val_from_train > 0 (the fraction of "
                              "training images held out)")

    def best_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better) that selects the best checkpoint."""
        name = self.config.train.best_metric or self.default_best
        if name not in self.metric_names:
            raise ConfigError(f"train.best_metric: task {self.name!r} reports {', '.join(self.metric_names)}; "
                              f"got {name!r}")
        return name, name not in self.lower_is_better

    def save_assets(self, directory: Path) -> None:
        """Writes what evaluation needs besides the weights (VQA: the answer vocabulary)."""

    def load_assets(self, directory: Path) -> None:
        """Reads what ``save_assets`` wrote."""

    def _eval_batches(self, dataset: Dataset, ectx: EvalContext, desc: str, indices: Optional[list[int]] = None):
        """Yields (batch, labels) on device for this process's contiguous share of ``indices``."""
        indices = list(range(len(dataset))) if indices is None else indices
        mine = [indices[i] for i in shard_range(len(indices), ectx.dist)]
        loader = make_dataloader(dataset, ectx.batch_size, sampler=mine, num_workers=self.config.data.num_workers)
        bar = tqdm(loader, desc=desc, unit="batch", disable=not (ectx.progress and ectx.dist.is_main), leave=False)
        for batch, labels in bar:
            yield batch.to(ectx.dist.device), labels.to(ectx.dist.device)


# ------------------------------------------------------------------------------------------ pretrain
class PretrainTask(Task):
    """MLM + MRC-KL + ITM on image-caption pairs (docs/method.md §6). Validation: the same losses on cc_valid with
    the masks of epoch 0, so every epoch is scored on identical corruptions."""

    name = "pretrain"
    metric_names = ("loss", "mlm", "mrc", "itm", "itm_accuracy")
    default_best = "loss"
    lower_is_better = frozenset({"loss", "mlm", "mrc", "itm"})
    test_splits = ("val",)

    def _dataset(self, key: str) -> CaptionPairsDataset:
        d = self.config.data
        return CaptionPairsDataset(d.path(key), self.store, self.tokenizer, d.max_text_len, d.max_regions,
                                   seed=self.config.train.seed, mrc=d.mrc, skip_bad=d.skip_bad)

    def train_dataset(self) -> Dataset:
        if self.config.data.val_from_train > 0:
            raise ConfigError("data.val_from_train: pretraining validates on data.cc_valid; hold-out splits are "
                              "for fine-tuning tasks")
        return self._dataset("cc_train")

    def build_heads(self, model: VLModel) -> nn.Module:
        return pretrain_heads_for(model, num_region_classes=max(1, self.store.num_classes or 1))

    def _losses(self, model: nn.Module, heads: nn.Module, batch: Batch, labels: Any, validate: bool = True,
                count_denominator=None):
        output = model(batch, validate=validate)
        mlm_labels, mrc_mask = ignore_mismatched(labels.itm_labels, labels.mlm_labels, labels.mrc_mask)
        # The collate's target positions: gathering by them needs no host sync.
        logits = heads(output, mlm_labels=mlm_labels, mrc_target_mask=mrc_mask,
                       mlm_index=labels.mlm_index, mrc_index=labels.mrc_index)
        loss = pretrain_loss(logits, itm_labels=labels.itm_labels, mrc_target_probs=labels.mrc_targets,
                             weights=tuple(self.config.train.loss_weights), count_denominator=count_denominator)
        return output, logits, loss

    def step(self, model, heads, batch, labels) -> StepOutput:
        # MLM/MRC as means over the global batch's targets, so W processes train like one (only in
        # training: evaluation shards may hold different numbers of batches, and a collective would hang).
        output, _, loss = self._losses(model, heads, batch, labels, validate=False,
                                       count_denominator=partial(global_count_denominator, ctx=self.ctx))
        parts = {"mlm": loss.mlm.detach(), "mrc": loss.mrc.detach(), "itm": loss.itm.detach()}
        return StepOutput(loss.total, parts, output.routes)

    def evaluate(self, model, heads, split, ectx) -> dict[str, float]:
        if split not in ("val", "valid"):
            raise ConfigError(f"pretrain evaluates split 'val' (data.cc_valid), got {split!r}")
        dataset = self._dataset("cc_valid")
        dataset.set_epoch(0)
        sums = torch.zeros(6, dtype=torch.float64)  # loss, mlm, mrc, itm (x batch size), itm hits, samples
        with torch.no_grad(), ectx.autocast():
            for batch, labels in self._eval_batches(dataset, ectx, "validating"):
                _, logits, loss = self._losses(model, heads, batch, labels)
                n = batch.batch_size
                hits = (logits.itm.argmax(-1) == labels.itm_labels).sum()
                sums += torch.tensor([float(loss.total) * n, float(loss.mlm) * n, float(loss.mrc) * n,
                                      float(loss.itm) * n, float(hits), n], dtype=torch.float64)
        total = sum(all_gather_objects(sums, ectx.dist))
        n = max(float(total[5]), 1.0)
        return {"loss": float(total[0]) / n, "mlm": float(total[1]) / n, "mrc": float(total[2]) / n,
                "itm": float(total[3]) / n, "itm_accuracy": 100.0 * float(total[4]) / n}


# ----------------------------------------------------------------------------------------------- vqa
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

    def __init__(self, config, model_config, ctx) -> None:
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

    def _files(self, split: str) -> tuple[list[Path], Optional[list[Path]]]:
        d = self.config.data
        trainval = d.vqa_protocol == "trainval"
        if split == "train":
            if trainval:
                return ([d.path("vqa_train_questions"), d.path("vqa_val_questions")],
                        [d.path("vqa_train_annotations"), d.path("vqa_val_annotations")])
            return [d.path("vqa_train_questions")], [d.path("vqa_train_annotations")]
        if split == "val":
            if trainval:
                raise ConfigError("VQA split 'val' overlaps the training data under data.vqa_protocol=trainval "
                                  "(train + val minus minival); evaluate 'minival', or train with vqa_protocol=train")
            return [d.path("vqa_val_questions")], [d.path("vqa_val_annotations")]
        if split == "minival":
            return [d.path("vqa_val_questions")], [d.path("vqa_val_annotations")]
        if split in VQA_TEST_SPLITS:
            key = VQA_TEST_SPLITS[split]
            if getattr(d, key) is None:
                raise ConfigError(f"VQA split {split!r} needs data.{key}")
            return [d.path(key)], None
        raise ConfigError(f"unknown VQA split {split!r}; choose train, val, minival, test-dev, test-std "
                          f"or {HELDOUT} (with data.val_from_train)")

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

    def _dataset(self, split: str) -> VQADataset:
        d = self.config.data
        self._check_heldout(split)
        questions, annotations = self._files("train" if split == HELDOUT else split)
        include = exclude = None
        if split == "minival":
            include = self.minival_ids()
        elif split == HELDOUT:
            include = self.heldout_question_ids()
        elif split == "train":
            exclude = (self.minival_ids() if d.vqa_protocol == "trainval" else set()) | self.heldout_question_ids()
            exclude = exclude or None
        return VQADataset(questions, annotations, self.store, self.tokenizer, self._ensure_vocab(),
                          d.max_text_len, d.max_regions, oov="keep", skip_bad=d.skip_bad,
                          include_ids=include, exclude_ids=exclude)

    def train_dataset(self) -> Dataset:
        return self._dataset("train")

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
        dataset = self._dataset(split)
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
        _, annotations = self._files("train" if split == HELDOUT else split)
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


# ----------------------------------------------------------------------------------------- retrieval
class RetrievalTask(Task):
    """Flickr30k (docs/method.md §7): 4-way training; evaluation scores every (caption, image) pair of a split."""

    name = "retrieval"
    metric_names = ("ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "r_mean")
    default_best = "r_mean"
    test_splits = ("test",)

    def train_dataset(self) -> Dataset:
        d = self.config.data
        # Every process needs the hard-negative pool; only rank 0 caches it (in the run, not the data).
        cache = Path(self.config.output_dir) / "cache" / "hardneg_train.npz" if self.ctx.is_main else None
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
        return RetrievalTrainDataset(self._train_file("train"), self.store, self.tokenizer, d.max_text_len, d.max_regions,
                                     seed=self.config.train.seed, hard_k=d.hard_negatives_k, cache_path=cache,
                                     skip_bad=d.skip_bad)

    def build_heads(self, model: VLModel) -> nn.Module:
        c = model.config
        return build_head("retrieval", pooler_size=c.pooler_size, initializer_range=c.initializer_range,
                          dropout=c.hidden_dropout)

    def step(self, model, heads, batch, labels) -> StepOutput:
        if self.config.train.retrieval_shared_noise:
            # Rows are consecutive groups of num_candidates pairs (one caption's candidates).
            k = labels.num_candidates
            batch = replace(batch, noise_group=torch.arange(batch.batch_size, device=batch.text_ids.device) // k * k)
        output = model(batch, validate=False)
        loss = retrieval_4way_loss(heads(output), labels.num_candidates)
        return StepOutput(loss, {}, output.routes)

    def _train_file(self, part: str) -> Path:
        """``data.flickr_train``, or with ``data.val_from_train`` the file of its training or held-out
        images (``part``), written once into the run's cache directory."""
        d = self.config.data
        if d.val_from_train <= 0:
            return d.path("flickr_train")
        import json

        from switchbert.io import atomic_write_text

        source = d.path("flickr_train")
        lines = [ln for ln in source.read_text(encoding="utf-8").splitlines() if ln.strip()]
        try:
            ids = [str(json.loads(ln)["id"]) for ln in lines]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{source}: data.val_from_train needs an 'id' on every line ({e})") from None
        held = heldout_images(ids, d.val_from_train, d.val_from_train_seed)
        keep = [ln for ln, i in zip(lines, ids) if (i in held) == (part == HELDOUT)]
        path = Path(self.config.output_dir) / "cache" / f"flickr_{part}_val_from_train.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "\n".join(keep) + "\n")
        return path

    def evaluate(self, model, heads, split, ectx) -> dict[str, float]:
        key = {"train": "flickr_train", "val": "flickr_val", "test": "flickr_test", HELDOUT: HELDOUT}.get(split)
        if key is None:
            raise ConfigError(f"unknown retrieval split {split!r}; choose train, val, test or {HELDOUT} "
                              "(with data.val_from_train)")
        self._check_heldout(split)
        d = self.config.data
        path = self._train_file(split) if split in ("train", HELDOUT) else d.path(key)
        dataset = RetrievalEvalDataset(path, self.store, self.tokenizer, d.max_text_len, d.max_regions)
        n_img = dataset.num_images if ectx.max_images <= 0 else min(ectx.max_images, dataset.num_images)
        caption_image = dataset.caption_image
        n_cap = int((caption_image < n_img).sum())  # captions are stored image by image
        # Pairs are image-major (index = image * num_captions + caption) so a run of pairs shares regions.
        indices = [i * dataset.num_captions + c for i in range(n_img) for c in range(n_cap)]
        parts: list[Tensor] = []
        with torch.no_grad(), ectx.autocast():
            for batch, labels in self._eval_batches(dataset, ectx, f"retrieval {split} pairs", indices):
                scores = heads(model(batch)).float().cpu()
                parts.append(torch.stack([labels.caption_index.cpu().double(), labels.image_index.cpu().double(),
                                          scores.double()], dim=1))
        local = torch.cat(parts) if parts else torch.zeros(0, 3, dtype=torch.float64)
        rows = torch.cat(all_gather_objects(local, ectx.dist))
        matrix = torch.full((n_cap, n_img), float("nan"), dtype=torch.float32)
        matrix[rows[:, 0].long(), rows[:, 1].long()] = rows[:, 2].float()
        if ectx.out_dir is not None and ectx.dist.is_main:
            torch.save(matrix, Path(ectx.out_dir) / f"retrieval_scores_{split}.pt")
        metrics = retrieval_recall(matrix, caption_image[:n_cap])
        metrics["r_mean"] = float(np.mean(list(metrics.values())))
        return metrics


# -------------------------------------------------------------------------------------------- refexp
class RefExpTask(Task):
    """RefCOCO+ (docs/method.md §7): a region is right when its IoU with the referred box is > 0.5.

    Recipe (``data.refexp_*``; the controlled configs follow VOLTA's ``ctrl_trainval_tasks.yml``):
    raw IoU targets (``refexp_target: iou``), VOLTA's +1-pixel IoU (``refexp_iou: volta``) for targets
    and accuracy, and VOLTA's loss scale (``refexp_loss: volta``: BCE summed over regions, mean over
    sentences). ViLBERT multi-task's recipe is ``refexp_target: iou_0.5`` plus
    ``refexp_add_gt_box: true`` with ``data.refcoco_gt_features`` (a store of the images'
    ground-truth-box regions, appended to the training regions only).
    """

    name = "refexp"
    metric_names = ("accuracy",)
    default_best = "accuracy"
    test_splits = ("val", "testA", "testB")
    # The head reads region states only: the poolers, and in dual-stream models the last cross layer's
    # text side, get no gradient.
    uses_every_parameter = False

    def __init__(self, config, model_config, ctx) -> None:
        super().__init__(config, model_config, ctx)
        d = config.data
        for key, value, allowed in (("refexp_target", d.refexp_target, ("iou", "iou_0.5")),
                                    ("refexp_iou", d.refexp_iou, ("volta", "continuous")),
                                    ("refexp_loss", d.refexp_loss, ("volta", "mean"))):
            if value not in allowed:
                raise ConfigError(f"data.{key} must be one of {', '.join(allowed)}, got {value!r}")
        self.gt_store = None
        if d.refexp_add_gt_box:
            if d.refcoco_gt_features is None:
                raise ConfigError("data.refexp_add_gt_box needs data.refcoco_gt_features (a feature store of the "
                                  "images' ground-truth-box regions)")
            self.gt_store = open_feature_store(d.path("refcoco_gt_features"))

    def _dataset(self, split: str) -> RefCOCODataset:
        d = self.config.data
        self._check_heldout(split)
        source = "train" if split == HELDOUT else split
        ds = RefCOCODataset(d.path("refcoco_refs"), d.path("refcoco_instances"), self.store, self.tokenizer,
                            source, d.max_text_len, d.max_regions, skip_bad=d.skip_bad, iou=d.refexp_iou,
                            target=d.refexp_target, gt_store=self.gt_store if split == "train" else None)
        if source == "train" and d.val_from_train > 0:
            # items: (ref_id, sent_id, image_id, text, box); whole images go to one side.
            held = heldout_images((it[2] for it in ds.items), d.val_from_train, d.val_from_train_seed)
            ds.items = [it for it in ds.items if (str(it[2]) in held) == (split == HELDOUT)]
        return ds

    def train_dataset(self) -> Dataset:
        return self._dataset("train")

    def build_heads(self, model: VLModel) -> nn.Module:
        c = model.config
        return build_head("refexp", pooler_size=c.pooler_size, region_hidden_size=c.region_hidden_size_,
                          initializer_range=c.initializer_range, dropout=c.hidden_dropout)

    def step(self, model, heads, batch, labels) -> StepOutput:
        output = model(batch, validate=False)
        loss = refexp_bce_loss(heads(output), labels.target, labels.region_mask, reduction=self.config.data.refexp_loss)
        return StepOutput(loss, {}, output.routes)

    def evaluate(self, model, heads, split, ectx) -> dict[str, float]:
        dataset = self._dataset(split)
        flags: list[tuple[int, int, bool]] = []
        with torch.no_grad(), ectx.autocast():
            for batch, labels in self._eval_batches(dataset, ectx, f"RefCOCO+ {split}"):
                logits = heads(model(batch)).float()
                hit = refexp_correct(logits, labels.iou, labels.region_mask)
                flags.extend(zip(labels.ref_ids.tolist(), labels.sent_ids.tolist(), hit.tolist()))
        flags = [f for part in all_gather_objects(flags, ectx.dist) for f in part]
        if not flags:
            raise ValueError(f"RefCOCO+ split {split!r} has no sample")
        return {"accuracy": 100.0 * float(np.mean([f[2] for f in flags]))}


TASK_CLASSES: dict[str, type[Task]] = {
    "pretrain": PretrainTask,
    "vqa": VQATask,
    "retrieval": RetrievalTask,
    "refexp": RefExpTask,
}


def build_task(config: ExperimentConfig, model_config: ModelConfig, ctx: DistContext) -> Task:
    return TASK_CLASSES[config.task](config, model_config, ctx)
