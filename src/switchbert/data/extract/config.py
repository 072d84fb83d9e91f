"""Typed settings of the region extractor: the detector's shape and every output-changing convention.

``DetectorConfig`` is what the weights define (layer widths, class counts); ``ExtractConfig`` is how
we run them (preprocessing, proposal counts, NMS, box conventions, how many regions to keep). The
defaults reproduce py-bottom-up-attention's ``demo/detectron2_mscoco_proposal_maxnms.py`` (the
36-region features VOLTA distributes); docs/data.md lists every field in a table with its source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}

PY_BUA_NMS_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""py-bottom-up-attention tries ``np.arange(0.3, 1.0, 0.1)`` in turn until enough boxes survive."""


@dataclass(frozen=True)
class DetectorConfig:
    """The bottom-up-attention Faster R-CNN (ResNet C4, Visual Genome), as its weights define it.

    The defaults are the published ResNet-101 model: 1,600 object classes + background, 400
    attributes + "no attribute", 12 anchors (4 sizes x 3 ratios), RoIPool 14x14 at stride 16 and a
    res5 head with dilation 2 and stride 1 (so the pooled 14x14 stays 14x14 before the mean).

    Attributes:
        blocks: residual blocks in res2, res3, res4, res5.
        stem_channels: output channels of the 7x7 stem conv (64).
        bottleneck_channels: bottleneck width of res2 (64); doubles per stage.
        res2_channels: output channels of res2 (256); doubles per stage (res5: 2048 = the feature size).
        rpn_channels: the RPN's 3x3 conv width (512 in the VG model, not res4's 1024).
        anchor_sizes, anchor_ratios: cell anchors, size-major (sizes x ratios = 12).
        num_classes: object classes without background (1600).
        num_attributes: attribute classes without "no attribute" (400); 0 = no attribute head.
        pool_size: RoIPool output side (14); feature_stride: res4's stride (16).
        res5_dilation: 2 keeps res5 at stride 1 with dilated 3x3 convs (the VG model); 1 = plain C4.
        bn_eps: frozen batch-norm epsilon (detectron2's FrozenBatchNorm2d: 1e-5).
    """

    blocks: tuple[int, int, int, int] = RESNET_BLOCKS[101]
    stem_channels: int = 64
    bottleneck_channels: int = 64
    res2_channels: int = 256
    rpn_channels: int = 512
    anchor_sizes: tuple[float, ...] = (64.0, 128.0, 256.0, 512.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    num_classes: int = 1600
    num_attributes: int = 400
    pool_size: int = 14
    feature_stride: int = 16
    res5_dilation: int = 2
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ValueError(f"blocks must be four positive counts (res2..res5), got {self.blocks}")
        if self.res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {self.res5_dilation}")
        if self.num_classes < 1 or self.num_attributes < 0:
            raise ValueError("num_classes must be >= 1 and num_attributes >= 0")

    @property
    def feat_dim(self) -> int:
        """Region feature size: res5's output channels (2048 for ResNet-101)."""
        return self.res2_channels * 8

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_ratios)


TINY_DETECTOR = DetectorConfig(blocks=(1, 1, 1, 1), stem_channels=8, bottleneck_channels=4, res2_channels=16,
                               rpn_channels=8, num_classes=7, num_attributes=5, pool_size=4)
"""A detector small enough for a CPU test (feature size 128); same code path as the full one."""


@dataclass(frozen=True)
class ExtractConfig:
    """How the detector is run; every field that changes the output is here (docs/data.md, "Conventions").

    Preprocessing:
        min_size, max_size: resize so the shorter side is ``min_size`` unless the longer would pass
            ``max_size`` (600 / 1000).
        pixel_mean: subtracted per channel, in ``channel_order`` (Caffe BGR means).
        channel_order: "bgr" (the weights' order); "rgb" reproduces HF's port, whose ``img_tensorize``
            hands RGB to a model configured for BGR.
        resize: "pil" resizes the uint8 image with Pillow's bilinear filter (detectron2's
            ResizeTransform, so py-bottom-up-attention); "torch" resizes the float image with
            ``F.interpolate(bilinear, align_corners=False)`` (HF's port).
        exif_transpose: apply the EXIF orientation, as ``cv2.imread`` does in py-bottom-up-attention.
        min_image_side: images with a side shorter than this are refused (1x1 and the like).
        max_aspect_ratio: images longer/shorter than this are refused (the resize would leave the
            short side a few pixels, below one feature cell).
        pad_batch: run a batch's images as one zero-padded tensor (faster on a GPU). Padding changes
            the convolutions near the bottom and right edges, so an image's features then depend on
            its batch mates (py-bua's demo, batch size 4). False (default) runs each image at its own
            size: the output is the same for any ``--batch-size`` and after a resume.

    Proposals (RPN):
        rpn_pre_nms_topk, rpn_post_nms_topk, rpn_nms_thresh, rpn_min_size: 6000, 300, 0.7, 0
            (py-bottom-up-attention sets POST_NMS_TOPK_TEST 300 for VG).
        anchor_offset: anchor centres at ``(i + anchor_offset) * stride``: 0.0 is detectron2 (py-bua,
            HF); Caffe's generate_anchors centres at ``i * 16 + 7.5`` (offset 0.46875).
        box_plus_one: Caffe's inclusive pixel boxes: widths are ``x2 - x1 + 1`` in box decoding,
            NMS areas and the empty-box test (False in detectron2, py-bua and HF).

    Detections:
        nms_mode: "max_class" (py-bua's demo: one box per proposal, its best non-background class,
            class-agnostic NMS), "per_class" (detectron2's default: NMS within each class over every
            (proposal, class) above ``score_thresh``) or "max_conf" (the original Caffe extractor,
            generate_tsv.py: per-class NMS at ``nms_thresholds[0]`` gives each proposal a confidence;
            proposals at or above ``score_thresh`` are kept, bounded by min/max_boxes; proposal boxes).
        nms_thresholds: tried in turn until ``min_boxes`` survive (py-bua: 0.3, 0.4, ..., 0.9); if
            none gives enough, the last one's result is kept (HF's port fails there instead).
        score_thresh: drop detections below this; py-bua's demo passes 0.2 but never applies it,
            so the default is 0.0.
        min_boxes, max_boxes: the region count: 36/36 ("--boxes 36") or a range ("--boxes 10-100").
        feature_boxes: "proposal" pools the 2048-d feature from the RPN proposal box (py-bua, HF,
            the released features); "regressed" pools again from the final box.
        cls_prob_background: where the background column sits in the stored ``cls_prob``: "first"
            (index 0, like VOLTA's files and switchbert's synthetic stores) or "last" (detectron2's
            softmax order, as py-bua and HF compute it).
    """

    min_size: int = 600
    max_size: int = 1000
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)
    channel_order: Literal["bgr", "rgb"] = "bgr"
    resize: Literal["pil", "torch"] = "pil"
    exif_transpose: bool = True
    min_image_side: int = 2
    max_aspect_ratio: float = 50.0
    pad_batch: bool = False
    rpn_pre_nms_topk: int = 6000
    rpn_post_nms_topk: int = 300
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 0.0
    anchor_offset: float = 0.0
    box_plus_one: bool = False
    nms_mode: Literal["max_class", "per_class", "max_conf"] = "max_class"
    nms_thresholds: tuple[float, ...] = PY_BUA_NMS_THRESHOLDS
    score_thresh: float = 0.0
    min_boxes: int = 36
    max_boxes: int = 36
    feature_boxes: Literal["proposal", "regressed"] = "proposal"
    cls_prob_background: Literal["first", "last"] = "first"
    bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)

    def __post_init__(self) -> None:
        choices = {"channel_order": ("bgr", "rgb"), "resize": ("pil", "torch"),
                   "nms_mode": ("max_class", "per_class", "max_conf"), "feature_boxes": ("proposal", "regressed"),
                   "cls_prob_background": ("first", "last")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 1 <= self.min_boxes <= self.max_boxes:
            raise ValueError(f"boxes: need 1 <= min_boxes <= max_boxes, got {self.min_boxes}-{self.max_boxes}")
        if not self.nms_thresholds or any(not 0.0 < t <= 1.0 for t in self.nms_thresholds):
            raise ValueError(f"nms_thresholds must be a non-empty list in (0, 1], got {self.nms_thresholds}")
        if not 0.0 <= self.anchor_offset < 1.0:
            raise ValueError(f"anchor_offset must be in [0, 1), got {self.anchor_offset}")
        if self.min_size < 1 or self.max_size < self.min_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {self.min_size}/{self.max_size}")

    def settings(self) -> dict:
        """Every setting as plain JSON values (recorded in the store's metadata)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


CAFFE_CONVENTIONS = {"anchor_offset": 0.46875, "box_plus_one": True, "rpn_min_size": 16.0, "nms_mode": "max_conf",
                     "nms_thresholds": (0.3,), "score_thresh": 0.2}
"""The original Caffe model's conventions (MILVLG's bottom-up-attention.pytorch follows them)."""

HF_PORT_CONVENTIONS = {"channel_order": "rgb", "resize": "torch"}
"""What HF's LXMERT research example does differently (docs/data.md, "Against HF's port")."""


def parse_boxes(spec: str) -> tuple[int, int]:
    """``"36"`` -> (36, 36); ``"10-100"`` -> (10, 100). ValueError with the spec on anything else."""
    text = str(spec).strip()
    try:
        if "-" in text:
            lo, hi = (int(x) for x in text.split("-", 1))
        else:
            lo = hi = int(text)
    except ValueError:
        raise ValueError(f"--boxes {spec!r}: expected a count such as 36 or a range such as 10-100") from None
    if not 1 <= lo <= hi:
        raise ValueError(f"--boxes {spec!r}: need 1 <= min <= max")
    return lo, hi


def detector_settings(cfg: Optional[DetectorConfig]) -> dict:
    """The detector's shape as plain JSON values."""
    cfg = cfg or DetectorConfig()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
