"""Region processing (docs/method.md §2): cap the detector's regions, normalise boxes, compute IoU targets.

Dimension legend
    n  regions of one image as stored (any number)
    N  regions kept (n capped at ``max_regions``, 36 by default)
    C  detector classes (1601 for bottom-up-attention features)
    F  feature size (2048 for BUTD)

The data layer yields only the real regions. The model prepends the IMG token itself (feature = mean of
the valid regions, box (0, 0, 1, 1, 1)), so anything indexed by region here (MRC targets, RefCOCO+
IoU targets) is indexed like ``region_hidden[:, 1:]``, never ``region_hidden[:, 0]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

MAX_REGIONS = 36
BOX_DIM = 5


@dataclass
class Regions:
    """One image's regions, ready to collate.

    Attributes:
        features: (N, F) float32, or float16 as a float16 store holds them.
        boxes: (N, 5) float32 normalised (x1/W, y1/H, x2/W, y2/H, area/(W*H)), clipped to [0, 1].
        boxes_px: (N, 4) float32 pixel x1y1x2y2, kept for IoU targets.
        cls_prob: (N, C) float32 (or float16) detector class distribution, or None if the store has none.
        image_w, image_h: image size in pixels.
    """

    features: np.ndarray
    boxes: np.ndarray
    boxes_px: np.ndarray
    cls_prob: Optional[np.ndarray]
    image_w: float
    image_h: float

    @property
    def num_regions(self) -> int:
        return int(self.features.shape[0])


def normalize_boxes(boxes_px: np.ndarray, image_w: float, image_h: float) -> np.ndarray:
    """Pixel x1y1x2y2 boxes to the 5-d normalised boxes of docs/method.md §2.

    Args:
        boxes_px: (n, 4) pixel boxes.
        image_w, image_h: the image size; must be positive.

    Returns:
        (n, 5) float32: x1/W, y1/H, x2/W, y2/H, area/(W*H), coordinates clipped to [0, 1] because
        detectors sometimes emit boxes a pixel outside the image.
    """
    b = np.asarray(boxes_px, dtype=np.float32).reshape(-1, 4)
    scale = np.array([image_w, image_h, image_w, image_h], dtype=np.float32)
    out = np.empty((b.shape[0], BOX_DIM), dtype=np.float32)
    # ufuncs with out= rather than np.clip: the same numbers, a third of the time on 36 boxes (this
    # runs for every sample of every epoch)
    xy = out[:, :4]
    np.divide(b, scale, out=xy)
    np.minimum(np.maximum(xy, 0.0, out=xy), 1.0, out=xy)
    np.multiply(np.maximum(xy[:, 2] - xy[:, 0], 0), np.maximum(xy[:, 3] - xy[:, 1], 0), out=out[:, 4])
    return out


def process_regions(
    features: np.ndarray,
    boxes_px: np.ndarray,
    image_w: float,
    image_h: float,
    cls_prob: Optional[np.ndarray] = None,
    max_regions: int = MAX_REGIONS,
    keep_half: bool = False,
) -> Regions:
    """Keeps the first ``max_regions`` regions (detectors store them by confidence) and normalises.

    Args:
        features: (n, F) float, made float32.
        boxes_px: (n, 4) pixel x1y1x2y2.
        image_w, image_h: image size in pixels.
        cls_prob: optional (n, C) class distribution, kept for MRC-KL (docs/method.md §6).
        max_regions: cap N (36 in the controlled setting).
        keep_half: float16 features and ``cls_prob`` stay float16 (half the bytes to collate and hand
            to the main process; the model widens them on the device). The datasets pass True.
    """
    keep = min(int(features.shape[0]), max_regions)
    feats = np.asarray(features[:keep], dtype=_float_type(features, keep_half))
    bpx = np.asarray(boxes_px[:keep], dtype=np.float32).reshape(-1, 4)
    probs = None if cls_prob is None else np.asarray(cls_prob[:keep], dtype=_float_type(cls_prob, keep_half))
    return Regions(feats, normalize_boxes(bpx, image_w, image_h), bpx, probs, float(image_w), float(image_h))


def _float_type(x: np.ndarray, keep_half: bool):
    return np.float16 if keep_half and np.asarray(x).dtype == np.float16 else np.float32


def box_iou(boxes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of every box with one target box, both pixel x1y1x2y2.

    Args:
        boxes: (n, 4).
        target: (4,).

    Returns:
        (n,) float32 in [0, 1]; degenerate boxes give 0.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    t = np.asarray(target, dtype=np.float64).reshape(4)
    iw = np.clip(np.minimum(b[:, 2], t[2]) - np.maximum(b[:, 0], t[0]), 0, None)
    ih = np.clip(np.minimum(b[:, 3], t[3]) - np.maximum(b[:, 1], t[1]), 0, None)
    inter = iw * ih
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    area_t = max(t[2] - t[0], 0.0) * max(t[3] - t[1], 0.0)
    union = area_b + area_t - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).astype(np.float32)


def xywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    """COCO [x, y, w, h] to [x1, y1, x2, y2]."""
    x, y, w, h = (float(v) for v in box)
    return np.array([x, y, x + w, y + h], dtype=np.float32)
