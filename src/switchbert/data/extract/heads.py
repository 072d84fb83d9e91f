"""The RoI head: RoIPool 14x14 -> res5 (dilated) -> mean -> classes, box deltas, attributes.

Dimension legend: R boxes over the batch, F the feature size (2048), M object classes (1600),
Q attribute classes (400), P the pooled side (14).

Key names follow py-bottom-up-attention (``roi_heads.res5``, ``roi_heads.box_predictor.cls_score``,
``cls_embedding``, ``fc_attr``, ``attr_score``). Inside the model the background class is the last
logit (detectron2's order); config.ExtractConfig.cls_prob_background decides where it is stored.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from switchbert.data.extract.backbone import build_res5
from switchbert.data.extract.config import DetectorConfig
from switchbert.data.extract.roi import roi_pool

ROI_CHUNK = 100


class BoxPredictor(nn.Module):
    """Pooled feature (R, F) -> class logits (R, M + 1), deltas (R, 4M), attribute logits (R, Q + 1).

    The attribute head (py-bottom-up-attention's VG model) embeds the arg-max class, background
    included, concatenates it to the feature, and scores attributes through one hidden layer of F / 4.
    """

    def __init__(self, feat_dim: int, num_classes: int, num_attributes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(feat_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(feat_dim, num_classes * 4)
        self.num_attributes = num_attributes
        if num_attributes:
            self.cls_embedding = nn.Embedding(num_classes + 1, feat_dim // 8)
            self.fc_attr = nn.Linear(feat_dim + feat_dim // 8, feat_dim // 4)
            self.attr_score = nn.Linear(feat_dim // 4, num_attributes + 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        logits = self.cls_score(x)
        deltas = self.bbox_pred(x)
        if not self.num_attributes:
            return logits, deltas, None
        emb = self.cls_embedding(logits.argmax(-1))
        attr = self.attr_score(F.relu(self.fc_attr(torch.cat([x, emb], dim=-1))))
        return logits, deltas, attr


class Res5ROIHeads(nn.Module):
    """Pools boxes from res4 and runs res5 on each: keys ``roi_heads.res5.*``, ``roi_heads.box_predictor.*``."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.pool_size = cfg.pool_size
        self.scale = 1.0 / cfg.feature_stride
        self.res5 = build_res5(cfg)
        self.box_predictor = BoxPredictor(cfg.feat_dim, cfg.num_classes, cfg.num_attributes)

    def pooled_features(self, features: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """(N, C, Hf, Wf) res4 and N lists of boxes -> (R, F) mean-pooled res5 features, image-major.

        Boxes go through res5 in chunks of ``ROI_CHUNK``: res5 on 300 boxes of 14x14 holds about 0.5 GB
        of activations at once, so chunking keeps memory flat whatever the batch size.
        """
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(boxes)])
        out = []
        for s in range(0, len(rois), ROI_CHUNK):
            x = roi_pool(features, rois[s:s + ROI_CHUNK], self.pool_size, self.scale)  # (r, C, P, P)
            out.append(self.res5(x).mean(dim=(2, 3)))  # (r, F): the 14x14 res5 map averaged, as released
        if not out:
            return features.new_zeros((0, self.box_predictor.cls_score.in_features))
        return torch.cat(out)
