"""Raw inputs to a model batch: texts and image regions in, ``Batch`` out (tokenise, pad, boxes, masks).

    processor = switchbert.Processor(max_text_len=23)
    batch = processor(["what color is the cube?"], [{"features": feats, "boxes": boxes_px,
                                                     "image_w": 640, "image_h": 480}])
    batch = processor.from_store(["a red cube"], store, ["42"])     # regions read from a feature store

It does what training does to a dataset item (``data.tokenizer.encode_batch``, ``data.regions.process_regions``,
``data.loader.make_batch``), so a model sees the same inputs at prediction time as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from torch import Tensor

from switchbert.batch import Batch
from switchbert.data.regions import MAX_REGIONS, Regions, process_regions

RegionInput = Union[Mapping[str, Any], Regions, Any]
"""One image's regions: a ``Regions``, a ``data.features.RegionRecord`` (what a feature store returns), or
a mapping with ``features`` (n, F), ``boxes`` (n, 4 pixel x1y1x2y2), ``image_w`` and ``image_h``."""


@dataclass
class Processor:
    """Texts + region records -> :class:`~switchbert.Batch`.

    Args:
        max_text_len: tokens per text, [CLS] and [SEP] included (the recipes: VQA 23, retrieval 30,
            RefCOCO+ 20, pretraining 38); longer texts are cut.
        max_regions: regions kept per image (the first ones: detectors store them by confidence).
        vocab_path: a WordPiece ``vocab.txt``; default the bert-base-uncased vocabulary shipped here.
    """

    max_text_len: int = 38
    max_regions: int = MAX_REGIONS
    vocab_path: Optional[str] = None

    def __post_init__(self) -> None:
        from switchbert.data.tokenizer import load_tokenizer

        if self.max_text_len < 2:
            raise ValueError(f"Processor: max_text_len must be at least 2 ([CLS] and [SEP]), got {self.max_text_len}")
        self.tokenizer = load_tokenizer(self.vocab_path)

    def __call__(self, texts: Union[str, Sequence[str]], regions: Union[RegionInput, Sequence[RegionInput]]) -> Batch:
        """One batch: sample i pairs ``texts[i]`` with ``regions[i]``.

        Args:
            texts: B strings (or one).
            regions: B region inputs (or one), see :data:`RegionInput`.

        Returns:
            A ``Batch``: text_ids (B, T), text_mask (B, T), region_feats (B, N, F), region_boxes (B, N, 5),
            region_mask (B, N), padded to the longest text and the most regions.
        """
        batch, _ = self.batch_with_boxes(texts, regions)
        return batch

    def batch_with_boxes(self, texts: Union[str, Sequence[str]],
                         regions: Union[RegionInput, Sequence[RegionInput]]) -> tuple[Batch, Tensor]:
        """As ``__call__``, and the regions' pixel boxes (B, N, 4) x1y1x2y2 (what a RefExp answer is)."""
        from switchbert.data.loader import make_batch
        from switchbert.data.tokenizer import encode_batch

        texts = [texts] if isinstance(texts, str) else list(texts)
        if isinstance(regions, (Mapping, Regions)) or hasattr(regions, "boxes_px") and hasattr(regions, "image_id"):
            regions = [regions]
        regions = [self.regions(r, i) for i, r in enumerate(regions)]
        if len(texts) != len(regions):
            raise ValueError(f"Processor: {len(texts)} texts but {len(regions)} region inputs (one each)")
        if not texts:
            raise ValueError("Processor: no texts")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"Processor: text {i} is a {type(t).__name__}, not a string")
        ids = [np.asarray(t, dtype=np.int64) for t in encode_batch(self.tokenizer, texts, self.max_text_len)]
        return make_batch(ids, regions)

    def from_store(self, texts: Union[str, Sequence[str]], store: Any, image_ids: Sequence[Any]) -> Batch:
        """A batch whose regions are read from a feature store (``data.open_feature_store``) by image id."""
        from switchbert.data.features import read_regions

        return self(texts, [read_regions(store, i, self.max_regions) for i in image_ids])

    def regions(self, item: RegionInput, index: int = 0) -> Regions:
        """One region input as ``Regions`` (at most ``max_regions``, 5-d normalised boxes)."""
        if isinstance(item, Regions):
            return item
        if not isinstance(item, Mapping):  # a RegionRecord from a feature store
            try:
                item = {"features": item.features, "boxes": item.boxes_px, "image_w": item.image_w,
                        "image_h": item.image_h}
            except AttributeError:
                raise ValueError(f"Processor: region input {index} is a {type(item).__name__}; give a mapping "
                                 "with features, boxes, image_w, image_h, a RegionRecord or Regions") from None
        missing = [k for k in ("features", "boxes", "image_w", "image_h") if k not in item]
        if missing:
            raise ValueError(f"Processor: region input {index} lacks {missing} (needs features (n, F), boxes "
                             "(n, 4) pixel x1y1x2y2, image_w, image_h)")
        feats = np.asarray(item["features"], dtype=np.float32)
        boxes = np.asarray(item["boxes"], dtype=np.float32)
        if feats.ndim != 2 or boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != feats.shape[0]:
            raise ValueError(f"Processor: region input {index}: features {feats.shape} and boxes {boxes.shape} "
                             "must be (n, F) and (n, 4)")
        w, h = float(item["image_w"]), float(item["image_h"])
        if not (w > 0 and h > 0):
            raise ValueError(f"Processor: region input {index}: image_w and image_h must be positive, got {w}, {h}")
        return process_regions(feats, boxes, w, h, max_regions=self.max_regions)
