"""RefCOCO+ referring expressions (UNC splits) with per-region IoU targets (docs/method.md §7).

Inputs: the REFER files ``refs(unc).p`` (pickled list of refs: ref_id, ann_id, image_id, split,
sentences [{sent, sent_id}]) and ``instances.json`` (COCO: annotations with id and bbox [x, y, w, h]).
Splits: train, val, testA, testB.

Dimension legend: B batch, T text tokens (<= 20), N regions (<= 36). The IoU targets are per real
region; the model's region_hidden has the IMG token at index 0, so the head scores
``region_hidden[:, 1:]`` against ``RefLabels.target`` (training) and ``RefLabels.iou`` (accuracy).

Conventions (``docs/heads_and_metrics.md``):

* IoU ``"volta"`` (VOLTA's ``iou``; the controlled configs): pixel-inclusive boxes, so a box's width
  is ``x2 - x1 + 1`` and the intersection's too; the referred box is COCO's ``[x, y, x + w, y + h]``.
  ``"continuous"`` (the default, ours): areas ``(x2 - x1) * (y2 - y1)``. The convention applies to both the training
  targets and the accuracy's "IoU > 0.5".
* target ``"iou"`` (VOLTA's controlled setting): the raw IoU; ``"iou_0.5"`` (ViLBERT multi-task):
  IoU below 0.5 set to 0.
* ``gt_store`` (ViLBERT multi-task, training only): the regions of a second store, whose boxes are
  the image's ground-truth boxes, are appended to the detected ones, so the referred box itself is a
  candidate.

A referred box that is not finite or has zero area could never be hit: it is a DataError naming the
annotation (skipped and counted under ``skip_bad``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from switchbert.batch import Batch
from switchbert.data.errors import BadItemPolicy, DataError, PathLike, load_json
from switchbert.data.features import FeatureStore, read_regions
from switchbert.data.loader import TensorFields, drop_skipped, make_batch
from switchbert.data.regions import Regions, box_iou, xywh_to_xyxy
from switchbert.data.safe_pickle import safe_load_file
from switchbert.data.index import StringTable
from switchbert.data.tokens import caption_tokens, with_specials

SPLITS = ("train", "val", "testA", "testB")
IOU_CONVENTIONS = ("volta", "continuous")
TARGETS = ("iou", "iou_0.5")


def box_iou_volta(boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """VOLTA's IoU: pixel-inclusive boxes (each side has ``x2 - x1 + 1`` pixels), both pixel x1y1x2y2.

    Args:
        boxes: (n, 4).
        target: (4,).

    Returns:
        (n,) float32; 0 where the union is not positive.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(target, dtype=np.float64).reshape(4)
    iw = np.clip(np.minimum(b[:, 2], t[2]) - np.maximum(b[:, 0], t[0]) + 1, 0, None)
    ih = np.clip(np.minimum(b[:, 3], t[3]) - np.maximum(b[:, 1], t[1]) + 1, 0, None)
    inter = iw * ih
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    area_t = (t[2] - t[0] + 1) * (t[3] - t[1] + 1)
    union = area_b + area_t - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).astype(np.float32)


def region_iou(boxes: np.ndarray, target: np.ndarray, convention: str = "volta") -> np.ndarray:
    """IoU of every box with the referred box under ``convention`` ("volta" or "continuous")."""
    if convention == "volta":
        return box_iou_volta(boxes, target)
    if convention == "continuous":
        return box_iou(boxes, target)
    raise ValueError(f"unknown IoU convention {convention!r}; choose one of {IOU_CONVENTIONS}")


def iou_target(iou: np.ndarray, target: str = "iou") -> np.ndarray:
    """The training target from the IoUs: raw (VOLTA) or zero below 0.5 (ViLBERT multi-task)."""
    if target == "iou":
        return iou
    if target == "iou_0.5":
        return np.where(iou < 0.5, 0.0, iou).astype(np.float32)
    raise ValueError(f"unknown RefCOCO+ target {target!r}; choose one of {TARGETS}")


def concat_regions(detected: Regions, extra: Regions) -> Regions:
    """Detected regions followed by ``extra`` (ground-truth-box regions of the same image)."""
    cls = None
    if detected.cls_prob is not None and extra.cls_prob is not None and detected.cls_prob.shape[1] == extra.cls_prob.shape[1]:
        cls = np.concatenate([detected.cls_prob, extra.cls_prob])
    return Regions(np.concatenate([detected.features, extra.features]), np.concatenate([detected.boxes, extra.boxes]),
                   np.concatenate([detected.boxes_px, extra.boxes_px]), cls, detected.image_w, detected.image_h)


@dataclass
class RefExample:
    """One referring sentence.

    Attributes:
        text_ids: (T,) int64.
        regions: the image's detected regions.
        iou: (N,) float32 IoU of each region with the target box (the accuracy's).
        target_box: (4,) float32 pixel x1y1x2y2.
        target: (N,) float32 training target (``iou``, or zero below 0.5).
    """

    ref_id: int
    sent_id: int
    image_id: str
    text_ids: np.ndarray
    regions: Regions
    iou: np.ndarray
    target_box: np.ndarray
    target: Optional[np.ndarray] = None


@dataclass
class RefLabels(TensorFields):
    """Targets and what accuracy needs.

    Attributes:
        iou: (B, N) float IoU of each region with the target (accuracy; 0 at padding).
        region_mask: (B, N) bool, True = a real region (ignore the loss elsewhere).
        target_boxes: (B, 4) float pixel x1y1x2y2.
        region_boxes_px: (B, N, 4) float the detected boxes in pixels.
        ref_ids, sent_ids: (B,) long.

    Accuracy (docs/method.md §7): the sample is correct when ``iou[b, argmax of scores over real regions] > 0.5``.
    """

    iou: Tensor
    region_mask: Tensor
    target_boxes: Tensor
    region_boxes_px: Tensor
    ref_ids: Tensor
    sent_ids: Tensor
    image_ids: list[str] = field(default_factory=list)
    target: Optional[Tensor] = None
    """(B, N) float BCE target (the IoU, or zero below 0.5); 0 at padding."""


def load_refs(path: PathLike) -> list[dict]:
    """The REFER ``refs(unc).p`` pickle."""
    refs = safe_load_file(path)  # restricted unpickler: a crafted refs file cannot run code (docs/data.md)
    if not isinstance(refs, list):
        raise DataError(path, None, f"expected a pickled list of refs, got {type(refs).__name__}")
    return refs


def load_instance_boxes(path: PathLike) -> dict[int, np.ndarray]:
    """Annotation id -> pixel x1y1x2y2 box from a COCO ``instances.json``."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(path, None, "not a COCO instances file: no 'annotations' list")
    boxes = {}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann or not (isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4):
            raise DataError(path, ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}",
                            "annotation needs id and bbox [x, y, w, h]")
        try:
            boxes[int(ann["id"])] = xywh_to_xyxy(ann["bbox"])
        except (TypeError, ValueError):  # a non-number: a NaN box, refused when a ref uses it
            boxes[int(ann["id"])] = np.full(4, np.nan, dtype=np.float32)
    return boxes


def check_box(box: np.ndarray) -> Optional[str]:
    """Why a referred box can never be hit (None when it is fine)."""
    if not np.isfinite(box).all():
        return f"the referred box {box.tolist()} is not finite"
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"the referred box {box.tolist()} (x1y1x2y2) has zero area: no region could reach IoU 0.5"
    return None


class RefCOCODataset(Dataset):
    """One item per referring sentence of ``split``.

    Args:
        refs_path: ``refs(unc).p``.
        instances_path: ``instances.json``.
        split: one of train, val, testA, testB.
        max_text_len: 20 in the controlled setting.
        skip_bad: skip bad items (counted, warned) instead of raising.
        iou: IoU convention, "volta" (+1 pixel) or "continuous".
        target: training target, "iou" or "iou_0.5".
        gt_store: a store of the images' ground-truth-box regions to append (ViLBERT, training only).
    """

    def __init__(self, refs_path: PathLike, instances_path: PathLike, store: FeatureStore, tokenizer,
                 split: str, max_text_len: int = 20, max_regions: int = 36, skip_bad: bool = False,
                 iou: str = "continuous", target: str = "iou", gt_store: Optional[FeatureStore] = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown RefCOCO+ split {split!r}; choose one of {SPLITS}")
        if iou not in IOU_CONVENTIONS:
            raise ValueError(f"unknown IoU convention {iou!r}; choose one of {IOU_CONVENTIONS}")
        if target not in TARGETS:
            raise ValueError(f"unknown RefCOCO+ target {target!r}; choose one of {TARGETS}")
        self.iou_convention, self.target, self.gt_store = iou, target, gt_store
        self.store, self.tokenizer, self.split = store, tokenizer, split
        self.max_text_len, self.max_regions = max_text_len, max_regions
        self.policy = BadItemPolicy(skip_bad)
        boxes = load_instance_boxes(instances_path)
        self.items: list[tuple[int, int, str, str, np.ndarray]] = []
        for i, ref in enumerate(load_refs(refs_path)):
            rid = ref.get("ref_id", f"#{i}") if isinstance(ref, dict) else f"#{i}"
            try:
                if not isinstance(ref, dict) or not {"ref_id", "ann_id", "image_id", "split", "sentences"} <= ref.keys():
                    raise DataError(refs_path, rid, "a ref needs ref_id, ann_id, image_id, split and sentences")
                if ref["split"] != split:
                    continue
                box = boxes.get(int(ref["ann_id"]))
                if box is None:
                    raise DataError(instances_path, f"ann {ref['ann_id']} (ref {rid})", "the ref's annotation is missing")
                problem = check_box(box)
                if problem is not None:
                    raise DataError(instances_path, f"ann {ref['ann_id']} (ref {rid})", problem)
                iid = str(ref["image_id"])
                if iid not in store:
                    raise DataError(refs_path, rid, f"missing image id {iid}: not in the feature store {store.path}")
                for k, s in enumerate(ref["sentences"]):
                    # VOLTA reads the annotator's "raw" sentence; REFER's "sent" is its lower-cased,
                    # tokenised form (the fallback).
                    text = (s.get("raw") or s.get("sent")) if isinstance(s, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        raise DataError(refs_path, f"ref {rid} sentence {k}", "empty referring expression")
                    self.items.append((int(ref["ref_id"]), int(s.get("sent_id", k)), iid, text, box))
            except DataError as err:
                self.policy.handle(err)
        if not self.items:
            raise DataError(refs_path, None, f"no usable referring expression in split {split!r}")
        # Tokenised once here, not per sample per epoch.
        self.tokens = caption_tokens(StringTable.from_strings([it[3] for it in self.items]), tokenizer, max_text_len)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Optional[RefExample]:
        ref_id, sent_id, iid, text, box = self.items[index]
        try:
            # RefExp does not use the detector's class distribution: not read, not copied
            regions = read_regions(self.store, iid, self.max_regions, require_regions=True, cls_prob=False)
            if self.gt_store is not None:
                regions = concat_regions(regions, read_regions(self.gt_store, iid, self.max_regions, cls_prob=False))
        except DataError as err:
            self.policy.handle(err)
            return None
        ids = with_specials(self.tokens.row(index))
        iou = region_iou(regions.boxes_px, box, self.iou_convention)
        return RefExample(ref_id, sent_id, iid, ids, regions, iou, box, iou_target(iou, self.target))

    def collate(self, examples: list[Optional[RefExample]]) -> tuple[Batch, RefLabels]:
        return collate_ref(examples)


def collate_ref(examples: list[Optional[RefExample]]) -> tuple[Batch, RefLabels]:
    """Pads examples into a :class:`Batch` and :class:`RefLabels` (skipped items dropped)."""
    examples = drop_skipped(examples)
    if not examples:
        raise DataError(None, None, "every item of the batch was skipped as bad")
    batch, boxes_px = make_batch([e.text_ids for e in examples], [e.regions for e in examples])
    N = batch.region_mask.shape[1]
    iou = torch.zeros((len(examples), N), dtype=torch.float32)
    target = torch.zeros((len(examples), N), dtype=torch.float32)
    for i, e in enumerate(examples):
        iou[i, : len(e.iou)] = torch.from_numpy(e.iou)
        target[i, : len(e.iou)] = torch.from_numpy(e.iou if e.target is None else e.target)
    labels = RefLabels(
        iou=iou,
        region_mask=batch.region_mask.clone(),
        target_boxes=torch.from_numpy(np.stack([e.target_box for e in examples])),
        region_boxes_px=boxes_px,
        ref_ids=torch.tensor([e.ref_id for e in examples], dtype=torch.long),
        sent_ids=torch.tensor([e.sent_id for e in examples], dtype=torch.long),
        image_ids=[e.image_id for e in examples],
        target=target,
    )
    return batch, labels
