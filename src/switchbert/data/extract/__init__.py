"""From raw images to region features: the bottom-up-attention detector in plain PyTorch.

No torchvision and no compiled extension: RoIPool, NMS and anchors are torch ops (CPU or CUDA).
``extract_regions(images, weights=...)`` returns RegionRecords with the detector's labels;
``switchbert features extract`` runs a folder into a store, resumably. docs/data.md, "From photos to
a store", has the conventions table and the weight files.

Modules: config (settings), backbone (ResNet C4), anchors (anchors, box coder), rpn, roi (RoIPool),
nms, heads (res5 + predictors), detector (the model + region selection), keymaps (weight layouts),
weights (files, sha256), preprocess (images), api, pipeline (folder runs), settings (the text form of the settings).
"""

from switchbert.data.extract.api import DetectedRegions, RegionExtractor, extract_regions
from switchbert.data.extract.config import DetectorConfig, ExtractConfig, TINY_DETECTOR
from switchbert.data.extract.detector import BottomUpDetector
from switchbert.data.extract.weights import load_detector, random_detector

__all__ = ["BottomUpDetector", "DetectedRegions", "DetectorConfig", "ExtractConfig", "RegionExtractor",
           "TINY_DETECTOR", "extract_regions", "load_detector", "random_detector"]
