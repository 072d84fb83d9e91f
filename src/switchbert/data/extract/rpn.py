"""Region proposal network: a 3x3 conv, objectness and box deltas per anchor, top-k, clip, NMS.

Dimension legend: N images, C res4 channels, Hf x Wf the feature map, A anchors per cell (12),
K proposals of one image (<= ``post_nms_topk``).

Follows detectron2's ``find_top_rpn_proposals`` as py-bottom-up-attention runs it: the top
``pre_nms_topk`` anchors by objectness logit, decoded, clipped to the image (its unpadded size),
empty boxes dropped, NMS at ``nms_thresh``, the first ``post_nms_topk`` kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from switchbert.data.extract.anchors import cell_anchors, clip_boxes, decode_boxes, grid_anchors, nonempty
from switchbert.data.extract.config import DetectorConfig, ExtractConfig
from switchbert.data.extract.nms import nms


class RPNHead(nn.Module):
    """(N, C, Hf, Wf) -> objectness logits (N, A, Hf, Wf) and deltas (N, 4A, Hf, Wf).

    One sigmoid logit per anchor (detectron2). Caffe's two-way softmax (background, object) is the
    same function of the difference of its two logits; keymaps.py folds MILVLG's 2A channels into A.
    """

    def __init__(self, cin: int, hidden: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, hidden, 3, 1, 1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class RPN(nn.Module):
    """Proposals for a batch; keys ``proposal_generator.rpn_head.*`` as in detectron2."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.stride = cfg.feature_stride
        self.rpn_head = RPNHead(cfg.res2_channels * 4, cfg.rpn_channels, cfg.num_anchors)
        # not a parameter and not in any weight file: computed from the config
        self.register_buffer("cell_anchors", cell_anchors(cfg.anchor_sizes, cfg.anchor_ratios), persistent=False)

    def forward(self, features: torch.Tensor, image_sizes: list[tuple[int, int]],
                run: ExtractConfig) -> list[torch.Tensor]:
        """Args:
            features: (N, C, Hf, Wf) res4.
            image_sizes: (height, width) of each resized image before padding.

        Returns:
            N tensors (K, 4) of proposal boxes, by descending objectness.
        """
        logits, deltas = self.rpn_head(features)
        n, a, hf, wf = logits.shape
        anchors = grid_anchors(self.cell_anchors, hf, wf, self.stride, run.anchor_offset)  # (Hf*Wf*A, 4)
        logits = logits.permute(0, 2, 3, 1).reshape(n, -1)  # (N, Hf*Wf*A): position-major, like anchors
        deltas = deltas.view(n, a, 4, hf, wf).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        out = []
        topk = min(run.rpn_pre_nms_topk, logits.shape[1])
        for i, (h, w) in enumerate(image_sizes):
            # detectron2 sorts rather than topk; equal logits keep the lower index either way
            scores, idx = logits[i].sort(descending=True, stable=True)
            scores, idx = scores[:topk], idx[:topk]
            boxes = decode_boxes(deltas[i, idx], anchors[idx], (1.0, 1.0, 1.0, 1.0), run.box_plus_one)
            boxes = clip_boxes(boxes, float(h), float(w), run.box_plus_one)
            keep = nonempty(boxes, run.rpn_min_size, run.box_plus_one)
            boxes, scores = boxes[keep], scores[keep]
            keep = nms(boxes, scores, run.rpn_nms_thresh, run.box_plus_one, max_keep=run.rpn_post_nms_topk)
            out.append(boxes[keep])
        return out
