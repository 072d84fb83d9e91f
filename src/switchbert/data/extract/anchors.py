"""Anchors and the box coder of Faster R-CNN, in torch ops.

Dimension legend: A cell anchors (sizes x ratios), Hf x Wf the feature map, K boxes, M classes.
Boxes are pixel ``x1, y1, x2, y2`` in the resized image.

Two conventions change numbers here and are options (config.py): where an anchor's centre sits in
its feature cell (``offset``; detectron2 0.0, Caffe ``7.5 / 16``) and whether a box ``[x1, x2]``
covers ``x2 - x1`` pixels (detectron2) or ``x2 - x1 + 1`` (Caffe's inclusive boxes, ``plus_one``).
"""

from __future__ import annotations

import math

import torch

SCALE_CLAMP = math.log(1000.0 / 16)
"""dw and dh are clamped here before exp (detectron2): no delta may grow a 16-pixel box past 1000."""


def cell_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> torch.Tensor:
    """(A, 4) anchors centred on 0, size-major: for each size, ratios in order (detectron2's order).

    An anchor of size s and ratio r (height / width) has area s^2: ``w = sqrt(s^2 / r)``, ``h = r * w``.
    """
    out = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in ratios:
            w = math.sqrt(area / ratio)
            h = ratio * w
            out.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(cells: torch.Tensor, height: int, width: int, stride: int, offset: float = 0.0) -> torch.Tensor:
    """(Hf * Wf * A, 4) anchors over a feature map, position-major (row, column, anchor).

    That order matches the RPN's outputs after ``permute(0, 2, 3, 1)``: position (y, x), then anchor.
    """
    device = cells.device
    xs = torch.arange(offset * stride, width * stride, step=stride, dtype=torch.float32, device=device)[:width]
    ys = torch.arange(offset * stride, height * stride, step=stride, dtype=torch.float32, device=device)[:height]
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack((sx.reshape(-1), sy.reshape(-1), sx.reshape(-1), sy.reshape(-1)), dim=1)
    return (shifts.view(-1, 1, 4) + cells.view(1, -1, 4)).reshape(-1, 4)


def decode_boxes(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, float, float, float],
                 plus_one: bool = False) -> torch.Tensor:
    """Applies (dx, dy, dw, dh) deltas to boxes.

    Args:
        deltas: (K, 4 * M) deltas, M boxes per source box (class-specific regression).
        boxes: (K, 4) source boxes (anchors or proposals).
        weights: the deltas are divided by these (RPN 1,1,1,1; box head 10,10,5,5).
        plus_one: Caffe widths ``x2 - x1 + 1`` (the decoded x2 is ``ctr + w / 2`` either way, as in
            py-faster-rcnn's bbox_transform_inv).

    Returns:
        (K, 4 * M) boxes.
    """
    boxes = boxes.to(deltas.dtype)
    one = 1.0 if plus_one else 0.0
    widths = boxes[:, 2] - boxes[:, 0] + one
    heights = boxes[:, 3] - boxes[:, 1] + one
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx = deltas[:, 0::4] / wx
    dy = deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=SCALE_CLAMP)
    dh = (deltas[:, 3::4] / wh).clamp(max=SCALE_CLAMP)
    px = dx * widths[:, None] + ctr_x[:, None]
    py = dy * heights[:, None] + ctr_y[:, None]
    pw = torch.exp(dw) * widths[:, None]
    ph = torch.exp(dh) * heights[:, None]
    out = torch.empty_like(deltas)
    out[:, 0::4] = px - 0.5 * pw
    out[:, 1::4] = py - 0.5 * ph
    out[:, 2::4] = px + 0.5 * pw
    out[:, 3::4] = py + 0.5 * ph
    return out


def clip_boxes(boxes: torch.Tensor, height: float, width: float, plus_one: bool = False) -> torch.Tensor:
    """(..., 4) boxes clamped into the image: [0, width] x [0, height] (Caffe: [0, width - 1])."""
    one = 1.0 if plus_one else 0.0
    x = boxes[..., 0::2].clamp(min=0.0, max=width - one)
    y = boxes[..., 1::2].clamp(min=0.0, max=height - one)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0, plus_one: bool = False) -> torch.Tensor:
    """(K,) bool: both sides longer than ``threshold``."""
    one = 1.0 if plus_one else 0.0
    return ((boxes[:, 2] - boxes[:, 0] + one) > threshold) & ((boxes[:, 3] - boxes[:, 1] + one) > threshold)
