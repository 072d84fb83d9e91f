"""Greedy non-maximum suppression in torch ops (no compiled extension), CPU or CUDA.

Dimension legend: K boxes, pixel ``x1, y1, x2, y2``.

Same rule as torchvision's ``nms``: visit boxes by descending score, keep one unless its IoU with an
already kept box is greater than the threshold. The IoU matrix is computed on the boxes' device in
blocks of 256 sorted boxes against the later ones; the greedy walk is a loop over the rows of those
blocks on the CPU, and stops early once ``max_keep`` boxes are kept (the RPN keeps 300 of 6000).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

_BLOCK = 256  # sorted boxes whose IoU rows are computed at once


def box_iou(a: torch.Tensor, b: torch.Tensor, plus_one: bool = False) -> torch.Tensor:
    """(Ka, Kb) IoU; ``plus_one`` counts inclusive pixels (Caffe)."""
    one = 1.0 if plus_one else 0.0
    ax1, ay1, ax2, ay2 = (t[:, None] for t in a.unbind(1))
    bx1, by1, bx2, by2 = (t[None, :] for t in b.unbind(1))
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1) + one).clamp_(min=0)
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1) + one).clamp_(min=0)
    inter = iw.mul_(ih)
    area_a = (ax2 - ax1 + one) * (ay2 - ay1 + one)
    area_b = (bx2 - bx1 + one) * (by2 - by1 + one)
    return inter / (area_a + area_b - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, plus_one: bool = False,
        max_keep: Optional[int] = None) -> torch.Tensor:
    """Indices of the kept boxes, by descending score.

    Args:
        boxes: (K, 4); scores: (K,); threshold: suppress when IoU > threshold.
        max_keep: stop once this many are kept (the RPN keeps 300 of 6000): the result is the first
            ``max_keep`` of the full NMS, computed without the rest of the IoU matrix.

    Returns:
        (k,) int64 on the boxes' device.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order]
    k = len(order)
    removed = np.zeros(k, dtype=bool)
    keep: list[int] = []
    limit = k if max_keep is None else max_keep
    for start in range(0, k, _BLOCK):
        if len(keep) >= limit:
            break
        stop = min(start + _BLOCK, k)
        # rows of this block against every later box; earlier boxes are settled already
        over = (box_iou(sorted_boxes[start:stop], sorted_boxes[start:], plus_one) > threshold).cpu().numpy()
        for i in range(start, stop):
            if removed[i]:
                continue
            keep.append(i)
            if len(keep) >= limit:
                break
            removed[start:] |= over[i - start]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float,
                plus_one: bool = False, max_keep: Optional[int] = None) -> torch.Tensor:
    """NMS within each group (class): boxes of different groups never suppress each other.

    Shifts each group's boxes by a multiple of the largest coordinate so groups cannot overlap
    (torchvision's trick), then runs one :func:`nms`.
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    offsets = groups.to(boxes.dtype) * (boxes.max() + 2.0)
    return nms(boxes + offsets[:, None], scores, threshold, plus_one, max_keep)
