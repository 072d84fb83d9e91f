"""The bottom-up-attention detector and its region selection: images in, regions per image out.

Dimension legend: N images, R proposals of one image (<= 300), M object classes (1600), F the
feature size (2048), k the regions kept (``min_boxes``..``max_boxes``).

The selection is py-bottom-up-attention's ``demo/detectron2_mscoco_proposal_maxnms.py`` by default:
each proposal gets its best non-background class and that class's regressed box, class-agnostic NMS
runs at 0.3, 0.4, ... until ``min_boxes`` survive, the first ``max_boxes`` are kept, and each kept
region's feature is the one pooled from its *proposal* box. ``nms_mode="per_class"`` is detectron2's
standard per-class inference instead, and ``"max_conf"`` the original Caffe extractor's
(generate_tsv.py; MILVLG's caffe mode). Every switch is in config.ExtractConfig.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from switchbert.data.extract.anchors import clip_boxes, decode_boxes
from switchbert.data.extract.backbone import ResNetC4
from switchbert.data.extract.config import DetectorConfig, ExtractConfig
from switchbert.data.extract.heads import Res5ROIHeads
from switchbert.data.extract.nms import batched_nms, nms
from switchbert.data.extract.rpn import RPN

PER_CLASS_CANDIDATES = 10000
"""per_class NMS: at most this many (proposal, class) pairs above the threshold enter NMS, best first
(300 proposals x 1600 classes would otherwise be 480,000 pairs at a threshold of 0)."""


@dataclass
class Detections:
    """One image's kept regions, in the original image's pixels.

    Attributes:
        boxes: (k, 4) float32 x1y1x2y2 in the original image.
        features: (k, F) float32 mean-pooled res5 features.
        cls_prob: (k, M + 1) float32 class distribution, background where the config puts it.
        object_ids: (k,) int64 best non-background class (0-based among the M objects).
        object_conf: (k,) float32 its probability.
        attr_ids: (k,) int64 best attribute (0-based among the Q attributes), or None without a head.
        attr_conf: (k,) float32 its probability (softmax over the Q attributes, "no attribute" left out).
        proposal_index: (k,) int64 which proposal each region came from (features are pooled there).
    """

    boxes: torch.Tensor
    features: torch.Tensor
    cls_prob: torch.Tensor
    object_ids: torch.Tensor
    object_conf: torch.Tensor
    attr_ids: Optional[torch.Tensor]
    attr_conf: Optional[torch.Tensor]
    proposal_index: torch.Tensor


class BottomUpDetector(nn.Module):
    """ResNet C4 Faster R-CNN with the VG attribute head; inference only, no torchvision.

    Submodule names match py-bottom-up-attention's state dict: ``backbone``, ``proposal_generator``,
    ``roi_heads``.
    """

    def __init__(self, cfg: Optional[DetectorConfig] = None) -> None:
        super().__init__()
        self.cfg = cfg or DetectorConfig()
        self.backbone = ResNetC4(self.cfg)
        self.proposal_generator = RPN(self.cfg)
        self.roi_heads = Res5ROIHeads(self.cfg)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, image_sizes: list[tuple[int, int]], raw_sizes: list[tuple[int, int]],
                run: Optional[ExtractConfig] = None) -> list[Detections]:
        """Args:
            images: (N, 3, H, W) preprocessed, zero-padded to the batch's largest size.
            image_sizes: (height, width) of each resized image inside the padding.
            raw_sizes: (height, width) of each original image (boxes are returned in these pixels).
            run: the conventions (config.ExtractConfig; default = py-bottom-up-attention's demo).

        Returns:
            N Detections.
        """
        run = run or ExtractConfig()
        features = self.backbone(images)  # (N, C, Hf, Wf)
        proposals = self.proposal_generator(features, image_sizes, run)
        pooled = self.roi_heads.pooled_features(features, proposals)  # (sum R, F)
        logits, deltas, attr_logits = self.roi_heads.box_predictor(pooled)
        out, start = [], 0
        for i, props in enumerate(proposals):
            stop = start + len(props)
            sl = slice(start, stop)
            out.append(self._select(features[i:i + 1], props, pooled[sl], logits[sl], deltas[sl],
                                    None if attr_logits is None else attr_logits[sl], image_sizes[i], raw_sizes[i], run))
            start = stop
        return out

    def _select(self, feature_map: torch.Tensor, proposals: torch.Tensor, pooled: torch.Tensor, logits: torch.Tensor,
                deltas: torch.Tensor, attr_logits: Optional[torch.Tensor], size: tuple[int, int],
                raw: tuple[int, int], run: ExtractConfig) -> Detections:
        h, w = size
        probs = logits.softmax(-1)  # (R, M + 1), background last
        num = len(proposals)
        boxes = decode_boxes(deltas, proposals, run.bbox_reg_weights, run.box_plus_one).view(num, -1, 4)
        boxes = clip_boxes(boxes, float(h), float(w), run.box_plus_one)  # (R, M, 4)
        if run.nms_mode == "max_class":
            idx, classes, scores, kept_boxes = _max_class(boxes, probs[:, :-1], run)
        elif run.nms_mode == "per_class":
            idx, classes, scores, kept_boxes = _per_class(boxes, probs[:, :-1], run)
        else:
            idx, classes, scores, kept_boxes = _max_conf(proposals, probs[:, :-1], run)
        # back to the original image's pixels, as detectron2's detector_postprocess does
        rh, rw = raw
        scale = kept_boxes.new_tensor([rw / w, rh / h, rw / w, rh / h])
        raw_boxes = clip_boxes(kept_boxes * scale, float(rh), float(rw), run.box_plus_one)
        # detector_postprocess drops empty boxes but py-bua keeps their features (the two then no
        # longer line up); we drop the region whole, so the store never holds a zero-area box.
        one = 1.0 if run.box_plus_one else 0.0
        good = ((raw_boxes[:, 2] - raw_boxes[:, 0] + one) > 0) & ((raw_boxes[:, 3] - raw_boxes[:, 1] + one) > 0)
        idx, classes, scores, kept_boxes, raw_boxes = idx[good], classes[good], scores[good], kept_boxes[good], raw_boxes[good]
        if run.feature_boxes == "proposal":
            feats = pooled[idx]
        else:
            feats = self.roi_heads.pooled_features(feature_map, [kept_boxes])
        cls_prob = probs[idx]
        if run.cls_prob_background == "first":
            cls_prob = torch.cat([cls_prob[:, -1:], cls_prob[:, :-1]], dim=1)
        attr_ids = attr_conf = None
        if attr_logits is not None:
            # py-bua drops the last attribute logit ("no attribute") before the softmax
            attr_conf, attr_ids = attr_logits[idx, :-1].softmax(-1).max(-1)
        return Detections(raw_boxes.float(), feats.float(), cls_prob.float(), classes, scores.float(), attr_ids,
                          attr_conf, idx)


def _nms_loop(run: ExtractConfig, nms_at) -> torch.Tensor:
    """Tries each threshold until ``min_boxes`` survive; keeps the last try's result otherwise."""
    keep = None
    for t in run.nms_thresholds:
        keep = nms_at(t)[: run.max_boxes]
        if len(keep) >= run.min_boxes:
            break
    return keep


def _max_class(boxes: torch.Tensor, scores: torch.Tensor, run: ExtractConfig):
    """py-bua's selection: one candidate per proposal (its best class), class-agnostic NMS."""
    max_scores, max_classes = scores.max(1)  # (R,)
    max_boxes = boxes[torch.arange(len(boxes), device=boxes.device), max_classes]  # (R, 4)
    cand = torch.nonzero(max_scores >= run.score_thresh).squeeze(1) if run.score_thresh > 0 else \
        torch.arange(len(boxes), device=boxes.device)
    b, s = max_boxes[cand], max_scores[cand]
    keep = cand[_nms_loop(run, lambda t: nms(b, s, t, run.box_plus_one))]
    return keep, max_classes[keep], max_scores[keep], max_boxes[keep]


def _per_class(boxes: torch.Tensor, scores: torch.Tensor, run: ExtractConfig):
    """detectron2's inference: NMS within each class over (proposal, class) pairs above the threshold."""
    pairs = torch.nonzero(scores > run.score_thresh)  # (P, 2): proposal, class
    pair_scores = scores[pairs[:, 0], pairs[:, 1]]
    if len(pairs) > PER_CLASS_CANDIDATES:
        top = pair_scores.topk(PER_CLASS_CANDIDATES).indices
        pairs, pair_scores = pairs[top], pair_scores[top]
    pair_boxes = boxes[pairs[:, 0], pairs[:, 1]]
    keep = _nms_loop(run, lambda t: batched_nms(pair_boxes, pair_scores, pairs[:, 1], t, run.box_plus_one))
    return pairs[keep, 0], pairs[keep, 1], pair_scores[keep], pair_boxes[keep]


def _max_conf(proposals: torch.Tensor, scores: torch.Tensor, run: ExtractConfig):
    """The Caffe extractor's selection (bottom-up-attention's generate_tsv.py, MILVLG's caffe mode).

    Per class, NMS over the proposals at ``nms_thresholds[0]``; a proposal's confidence is its best
    score among the classes where it survives. Proposals with confidence >= ``score_thresh`` are kept
    in proposal order; fewer than ``min_boxes`` or more than ``max_boxes`` -> the most confident
    ``min_boxes`` / ``max_boxes``. Regions keep their *proposal* boxes.
    """
    import numpy as np

    from switchbert.data.extract.nms import box_iou

    num, classes = scores.shape
    over = (box_iou(proposals, proposals, run.box_plus_one) > run.nms_thresholds[0]).cpu().numpy()
    sc = scores.detach().cpu().numpy()
    order = np.argsort(-sc, axis=0, kind="stable")  # (R, M): each class's proposals by score
    max_conf = np.zeros(num, dtype=sc.dtype)
    for c in range(classes):
        removed = np.zeros(num, dtype=bool)
        col = sc[:, c]
        for i in order[:, c]:
            if removed[i]:
                continue
            if col[i] > max_conf[i]:
                max_conf[i] = col[i]
            removed |= over[i]
    conf = torch.as_tensor(max_conf, device=proposals.device)
    keep = torch.nonzero(conf >= run.score_thresh).squeeze(1)
    if len(keep) < run.min_boxes:
        keep = torch.argsort(conf, descending=True, stable=True)[: run.min_boxes]
    elif len(keep) > run.max_boxes:
        keep = torch.argsort(conf, descending=True, stable=True)[: run.max_boxes]
    best, best_cls = scores[keep].max(1)
    return keep, best_cls, best, proposals[keep]
