"""RefCOCO+ referring expressions: BCE against each region's IoU with the referred box; a region is
right when its IoU is > 0.5 (docs/method.md §7, docs/heads_and_metrics.md).

Dimension legend: B batch, N regions.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from switchbert.data import RefCOCODataset, open_feature_store
from switchbert.data.refcoco import SPLITS
from switchbert.heads import build_head
from switchbert.heads.losses import refexp_bce_loss
from switchbert.metrics import refexp_correct
from switchbert.models.base import VLModel
from switchbert.train.config import ConfigError
from switchbert.train.distributed import all_gather_objects
from switchbert.train.tasks.base import HELDOUT, StepOutput, Task, heldout_images


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
    required_files = ("features", "refcoco_refs", "refcoco_instances")
    lazy_files = ("refcoco_gt_features",)  # opened with refexp_add_gt_box
    text_len = 20

    def __init__(self, config, model_config=None, ctx=None) -> None:
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

    def split_files(self, split: str) -> tuple[str, ...]:
        # "test": testA + testB, as route analysis reads them (analysis_dataset)
        if split not in SPLITS + (HELDOUT, "test"):
            raise ConfigError(f"unknown RefCOCO+ split {split!r}; choose {', '.join(SPLITS)} or {HELDOUT} "
                              "(with data.val_from_train)")
        return ("refcoco_refs", "refcoco_instances")

    def dataset(self, split: str) -> RefCOCODataset:
        """The expressions of ``split`` (train, val, testA, testB, heldout); ground-truth-box regions
        are added to train only."""
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

    def analysis_dataset(self, split: str) -> Dataset:
        if split == "test":  # both test splits (the people and the objects halves of RefCOCO+)
            return ConcatDataset([self.dataset("testA"), self.dataset("testB")])
        return self.dataset(split)

    def train_dataset(self) -> Dataset:
        return self.dataset("train")

    def build_heads(self, model: VLModel) -> nn.Module:
        c = model.config
        return build_head("refexp", pooler_size=c.pooler_size, region_hidden_size=c.region_hidden_size_,
                          initializer_range=c.initializer_range, dropout=c.hidden_dropout)

    def step(self, model, heads, batch, labels) -> StepOutput:
        output = model(batch, validate=False)
        loss = refexp_bce_loss(heads(output), labels.target, labels.region_mask, reduction=self.config.data.refexp_loss)
        return StepOutput(loss, {}, output.routes)

    def evaluate(self, model, heads, split, ectx) -> dict[str, float]:
        dataset = self.dataset(split)
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
