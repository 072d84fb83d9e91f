"""RefCOCO+ referring expressions (UNC splits) with per-region IoU targets (SPEC §7).

Inputs: the REFER files ``refs(unc).p`` (pickled list of refs: ref_id, ann_id, image_id, split,
sentences [{sent, sent_id}]) and ``instances.json`` (COCO: annotations with id and bbox [x, y, w, h]).
Splits: train, val, testA, testB.

Dimension legend: B batch, T text tokens (<= 20), N regions (<= 36). The IoU targets are per real
region; the model's region_hidden has the IMG token at index 0, so the head scores
``region_hidden[:, 1:]`` against ``RefLabels.iou``.
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
from switchbert.data.tokenizer import encode

SPLITS = ("train", "val", "testA", "testB")


@dataclass
class RefExample:
    """One referring sentence.

    Attributes:
        text_ids: (T,) int64.
        regions: the image's detected regions.
        iou: (N,) float32 IoU of each region with the target box.
        target_box: (4,) float32 pixel x1y1x2y2.
    """

    ref_id: int
    sent_id: int
    image_id: str
    text_ids: np.ndarray
    regions: Regions
    iou: np.ndarray
    target_box: np.ndarray


@dataclass
class RefLabels(TensorFields):
    """Targets and what accuracy needs.

    Attributes:
        iou: (B, N) float IoU of each region with the target (BCE target; 0 at padding).
        region_mask: (B, N) bool, True = a real region (ignore the loss elsewhere).
        target_boxes: (B, 4) float pixel x1y1x2y2.
        region_boxes_px: (B, N, 4) float the detected boxes in pixels.
        ref_ids, sent_ids: (B,) long.

    Accuracy (SPEC §7): the sample is correct when ``iou[b, argmax of scores over real regions] > 0.5``.
    """

    iou: Tensor
    region_mask: Tensor
    target_boxes: Tensor
    region_boxes_px: Tensor
    ref_ids: Tensor
    sent_ids: Tensor
    image_ids: list[str] = field(default_factory=list)


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
        boxes[int(ann["id"])] = xywh_to_xyxy(ann["bbox"])
    return boxes


class RefCOCODataset(Dataset):
    """One item per referring sentence of ``split``.

    Args:
        refs_path: ``refs(unc).p``.
        instances_path: ``instances.json``.
        split: one of train, val, testA, testB.
        max_text_len: 20 in the controlled setting.
        skip_bad: skip bad items (counted, warned) instead of raising.
    """

    def __init__(self, refs_path: PathLike, instances_path: PathLike, store: FeatureStore, tokenizer,
                 split: str, max_text_len: int = 20, max_regions: int = 36, skip_bad: bool = False) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown RefCOCO+ split {split!r}; choose one of {SPLITS}")
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
                iid = str(ref["image_id"])
                if iid not in store:
                    raise DataError(refs_path, rid, f"missing image id {iid}: not in the feature store {store.path}")
                for k, s in enumerate(ref["sentences"]):
                    text = s.get("sent") if isinstance(s, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        raise DataError(refs_path, f"ref {rid} sentence {k}", "empty referring expression")
                    self.items.append((int(ref["ref_id"]), int(s.get("sent_id", k)), iid, text, box))
            except DataError as err:
                self.policy.handle(err)
        if not self.items:
            raise DataError(refs_path, None, f"no usable referring expression in split {split!r}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Optional[RefExample]:
        ref_id, sent_id, iid, text, box = self.items[index]
        try:
            regions = read_regions(self.store, iid, self.max_regions, require_regions=True)
        except DataError as err:
            self.policy.handle(err)
            return None
        ids = np.asarray(encode(self.tokenizer, text, self.max_text_len), dtype=np.int64)
        return RefExample(ref_id, sent_id, iid, ids, regions, box_iou(regions.boxes_px, box), box)

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
    for i, e in enumerate(examples):
        iou[i, : len(e.iou)] = torch.from_numpy(e.iou)
    labels = RefLabels(
        iou=iou,
        region_mask=batch.region_mask.clone(),
        target_boxes=torch.from_numpy(np.stack([e.target_box for e in examples])),
        region_boxes_px=boxes_px,
        ref_ids=torch.tensor([e.ref_id for e in examples], dtype=torch.long),
        sent_ids=torch.tensor([e.sent_id for e in examples], dtype=torch.long),
        image_ids=[e.image_id for e in examples],
    )
    return batch, labels
