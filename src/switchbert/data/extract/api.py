"""The Python API: ``extract_regions(images) -> list[DetectedRegions]`` (RegionRecords with detections).

Dimension legend: k regions of one image, F features (2048), C = M + 1 classes (1601).

    from switchbert.data.extract import RegionExtractor, extract_regions
    records = extract_regions(["a.jpg", "b.png"], weights="faster_rcnn_from_caffe_attr.pkl")
    records[0].features   # (k, 2048) float32; .boxes_px (k, 4); .cls_prob (k, 1601), background first

Each record is a :class:`~switchbert.data.features.RegionRecord` (what every store writer takes) with
the detector's labels added.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch

from switchbert.data.errors import PathLike
from switchbert.data.extract.config import DetectorConfig, ExtractConfig, detector_settings
from switchbert.data.extract.detector import BottomUpDetector, Detections
from switchbert.data.extract.preprocess import ImageInput, LoadedImage, check_size, load_image, make_batch
from switchbert.data.extract.weights import WeightsInfo, load_detector
from switchbert.data.features import RegionRecord


@dataclass
class DetectedRegions(RegionRecord):
    """A RegionRecord plus the detector's labels (k regions).

    Attributes:
        object_ids: (k,) int64 best object class, 0-based among the 1,600 (background excluded).
        object_conf: (k,) float32 its probability.
        attr_ids: (k,) int64 best attribute, 0-based among the 400, or None (no attribute head).
        attr_conf: (k,) float32 its probability, or None.
    """

    object_ids: Optional[np.ndarray] = None
    object_conf: Optional[np.ndarray] = None
    attr_ids: Optional[np.ndarray] = None
    attr_conf: Optional[np.ndarray] = None


def to_record(image_id: str, det: Detections, raw_size: tuple[int, int]) -> DetectedRegions:
    """Detections (torch, any device) -> a numpy DetectedRegions."""
    def np_(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
        return None if t is None else t.detach().cpu().numpy()

    h, w = raw_size
    return DetectedRegions(image_id, np_(det.features).astype(np.float32), np_(det.boxes).astype(np.float32),
                           float(w), float(h), np_(det.cls_prob).astype(np.float32), np_(det.object_ids),
                           np_(det.object_conf), np_(det.attr_ids), np_(det.attr_conf))


class RegionExtractor:
    """A loaded detector plus its conventions; call :meth:`extract` on images.

    Args:
        weights: a weight file (keymaps.LAYOUTS), or None with ``model`` given.
        model: an already built detector (tests, random weights).
        config: the conventions (default: py-bottom-up-attention's demo, 36 boxes).
        detector: the detector's shape (default: the published ResNet-101).
        device: "cpu", "cuda", "cuda:1", ...
        layout: the weight file's key layout, or "auto".
    """

    def __init__(self, weights: Optional[PathLike] = None, *, model: Optional[BottomUpDetector] = None,
                 config: Optional[ExtractConfig] = None, detector: Optional[DetectorConfig] = None,
                 device: Union[str, torch.device] = "cpu", layout: str = "auto") -> None:
        self.config = config or ExtractConfig()
        self.device = torch.device(device)
        self.weights: Optional[WeightsInfo] = None
        if model is None:
            if weights is None:
                raise ValueError("give a weights file (or a built model)")
            model, self.weights = load_detector(weights, detector, layout, self.device)
        self.model = model.eval().to(self.device)

    def metadata(self) -> dict:
        """What made these features: weights (file, sha256, layout) and every setting."""
        return {"extractor": "switchbert.data.extract", "weights": None if self.weights is None else self.weights.as_dict(),
                "detector": detector_settings(self.model.cfg), "settings": self.config.settings()}

    def extract_loaded(self, images: Sequence[LoadedImage]) -> list[DetectedRegions]:
        """One batch of decoded images -> one record each, in order."""
        if not images:
            return []
        groups = [list(images)] if self.config.pad_batch else [[im] for im in images]
        out = []
        for group in groups:
            batch, sizes, raws = make_batch([im.bgr for im in group], self.config, self.device)
            dets = self.model(batch, sizes, raws, self.config)
            out += [to_record(im.image_id, d, raw) for im, d, raw in zip(group, dets, raws)]
        return out

    def extract(self, images: Iterable[ImageInput], ids: Optional[Sequence[str]] = None,
                batch_size: int = 1) -> list[DetectedRegions]:
        """Paths or (H, W, 3) uint8 arrays (already in the config's channel order) -> records.

        Ids default to the file stem (paths) or the position (arrays). A bad image raises
        BadImageError naming it; :func:`switchbert.data.extract.pipeline.extract_folder` skips instead.
        """
        items = list(images)
        ids = list(ids) if ids is not None else [Path(x).stem if isinstance(x, (str, Path)) else str(i)
                                                   for i, x in enumerate(items)]
        out: list[DetectedRegions] = []
        for s in range(0, len(items), batch_size):
            loaded = []
            for item, iid in zip(items[s:s + batch_size], ids[s:s + batch_size]):
                if isinstance(item, np.ndarray):
                    if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
                        raise ValueError(f"image {iid!r}: expected an (H, W, 3) uint8 array, got "
                                         f"{item.shape} {item.dtype}")
                    check_size(item.shape[0], item.shape[1], "<array>", iid, self.config)
                    loaded.append(LoadedImage(iid, item))
                else:
                    loaded.append(load_image(item, iid, self.config))
            out.extend(self.extract_loaded(loaded))
        return out


def extract_regions(images: Iterable[ImageInput], weights: Optional[PathLike] = None, *,
                    model: Optional[BottomUpDetector] = None, config: Optional[ExtractConfig] = None,
                    detector: Optional[DetectorConfig] = None, device: Union[str, torch.device] = "cpu",
                    layout: str = "auto", ids: Optional[Sequence[str]] = None,
                    batch_size: int = 1) -> list[DetectedRegions]:
    """Region features of ``images`` (paths or arrays): see :class:`RegionExtractor`."""
    ex = RegionExtractor(weights, model=model, config=config, detector=detector, device=device, layout=layout)
    return ex.extract(images, ids, batch_size)
