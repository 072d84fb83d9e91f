"""Referring-expression accuracy (docs/method.md §7): the top-scoring valid region's IoU with the target box > 0.5.

Evaluate batch by batch with ``refexp_correct`` (it needs only scores, IoUs and the region mask),
concatenate the per-sample flags, then report ``refexp_accuracy_per_split`` (UNC splits of RefCOCO+:
val, testA, testB). Accuracies are percentages (0-100).

Dimension legend
    B  samples (expressions), N real regions (padded)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[np.ndarray, Tensor]

IOU_THRESHOLD = 0.5


def refexp_correct(
    scores: ArrayLike, ious: ArrayLike, region_mask: ArrayLike, threshold: float = IOU_THRESHOLD
) -> np.ndarray:
    """Per-sample hit: does the best-scoring valid region overlap the target with IoU > ``threshold``?

    Args:
        scores: (B, N) region scores (``RefExpHead`` logits).
        ious: (B, N) IoU of each region with the referred box.
        region_mask: (B, N) bool, True = a real region. Padded regions are never picked; a sample
            without any valid region counts as a miss.
        threshold: strict IoU threshold.

    Returns:
        (B,) bool array.
    """
    s = torch.as_tensor(scores).detach().cpu().double()
    iou = torch.as_tensor(ious).detach().cpu().double()
    mask = torch.as_tensor(region_mask).detach().cpu()
    if s.dim() != 2 or tuple(iou.shape) != tuple(s.shape) or tuple(mask.shape) != tuple(s.shape):
        raise ValueError(
            f"refexp: scores, ious and region_mask must share one (B, N) shape, got "
            f"{tuple(s.shape)}, {tuple(iou.shape)}, {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"refexp: region_mask must be bool (True = real region), got {mask.dtype}")
    if torch.isnan(s).any():
        raise ValueError("refexp: scores contain NaN")
    masked = s.masked_fill(~mask, float("-inf"))
    best = masked.argmax(dim=1, keepdim=True)  # ties: the first region, as torch.argmax documents
    hit = iou.gather(1, best).squeeze(1) > threshold
    return (hit & mask.any(dim=1)).numpy()


def refexp_accuracy(
    scores: ArrayLike, ious: ArrayLike, region_mask: ArrayLike, threshold: float = IOU_THRESHOLD
) -> float:
    """Accuracy in percent over one set of samples; see ``refexp_correct``."""
    correct = refexp_correct(scores, ious, region_mask, threshold)
    if correct.size == 0:
        raise ValueError("refexp accuracy of an empty set is undefined")
    return 100.0 * float(correct.mean())


def refexp_accuracy_per_split(correct: ArrayLike | Sequence[bool], splits: Sequence[str]) -> dict[str, float]:
    """Accuracy in percent per split.

    Args:
        correct: (S,) per-sample hits (concatenated outputs of ``refexp_correct``).
        splits: (S,) each sample's split name, e.g. "val", "testA", "testB".

    Returns:
        ``{split: accuracy}`` in order of first appearance.
    """
    flags = np.asarray(correct.detach().cpu() if isinstance(correct, Tensor) else correct).astype(bool).reshape(-1)
    if flags.shape[0] != len(splits):
        raise ValueError(f"refexp_accuracy_per_split: {flags.shape[0]} results but {len(splits)} split names")
    names = np.asarray([str(s) for s in splits])
    out: dict[str, float] = {}
    for name in dict.fromkeys(names.tolist()):
        out[name] = 100.0 * float(flags[names == name].mean())
    return out
