"""Pretraining: MLM + MRC-KL + ITM on Conceptual Captions image-caption pairs (docs/method.md §6).

Dimension legend: B batch, T text tokens, N real regions.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.data import Dataset

from switchbert.batch import Batch
from switchbert.data import CaptionPairsDataset
from switchbert.heads import pretrain_heads_for
from switchbert.heads.losses import ignore_mismatched, pretrain_loss
from switchbert.models.base import VLModel
from switchbert.train.config import ConfigError
from switchbert.train.distributed import all_gather_objects, global_count_denominator
from switchbert.train.tasks.base import StepOutput, Task


class PretrainTask(Task):
    """MLM + MRC-KL + ITM on image-caption pairs (docs/method.md §6). Validation: the same losses on cc_valid with
    the masks of epoch 0, so every epoch is scored on identical corruptions."""

    name = "pretrain"
    metric_names = ("loss", "mlm", "mrc", "itm", "itm_accuracy")
    default_best = "loss"
    lower_is_better = frozenset({"loss", "mlm", "mrc", "itm"})
    test_splits = ("val",)
    required_files = ("features", "cc_train", "cc_valid")
    text_len = 38

    def split_files(self, split: str) -> tuple[str, ...]:
        if split == "train":
            return ("cc_train",)
        if split in ("val", "valid"):
            return ("cc_valid",)
        raise ConfigError(f"pretrain evaluates split 'val' (data.cc_valid), got {split!r}")

    def dataset(self, split: str) -> CaptionPairsDataset:
        """Image-caption pairs of ``split`` (train: cc_train, val: cc_valid), masks drawn per epoch."""
        d = self.config.data
        (key,) = self.split_files(split)
        return CaptionPairsDataset(d.path(key), self.store, self.tokenizer, d.max_text_len, d.max_regions,
                                   seed=self.config.train.seed, mrc=d.mrc, skip_bad=d.skip_bad)

    def train_dataset(self) -> Dataset:
        if self.config.data.val_from_train > 0:
            raise ConfigError("data.val_from_train: pretraining validates on data.cc_valid; hold-out splits are "
                              "for fine-tuning tasks")
        return self.dataset("train")

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
        dataset = self.dataset("val")
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
