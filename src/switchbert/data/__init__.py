"""The data layer: region-feature stores, text, the four datasets, masking, and the synthetic benchmark.

Modules, one concept each:
    errors       DataError (names file and item) and the --skip-bad policy
    features     feature stores (VOLTA LMDB raw/base64, bottom-up H5, our fast store), convert, inspect
    regions      region processing (docs/method.md §2): <= 36 regions, 5-d boxes, IoU
    tokenizer    bert-base-uncased WordPiece from the shipped vocab
    tokens       captions tokenised once, packed (no tokenising per sample)
    index        per-item indices as numpy: packed strings, ragged rows, id lookup (no object per item)
    caption_index  a captions file as numpy tables, tokenised once, cached on disk
    masking      MLM / region / ITM corruption as pure, seeded functions (docs/method.md §6)
    pretrain     Conceptual Captions pairs -> (Batch, PretrainLabels)
    vqa_answers  official VQA answer normalisation, soft score, answer vocabulary
    vqa          VQAv2 -> (Batch, VQALabels)
    retrieval    Flickr30k 4-way training tuples and all-pairs evaluation
    refcoco      RefCOCO+ -> (Batch, RefLabels)
    loader       collation helpers (into shared memory in workers) and make_dataloader
    synth        the synthetic benchmark, written in the real formats
    extract/     region features from raw images: the bottom-up-attention detector in plain PyTorch

The commands `switchbert features convert|inspect|extract` and `switchbert synth` are ``switchbert.commands.data``.

The data layer yields only real regions; the model prepends the IMG token, so region-indexed labels
(MRC targets, RefCOCO+ IoU) line up with ``region_hidden[:, 1:]``.
"""

from switchbert.data.errors import BadItemPolicy, DataError, DataWarning
from switchbert.data.features import (FeatureStore, RegionRecord, convert_store, inspect_store, open_feature_store,
                                      read_regions, write_store)
from switchbert.data.loader import make_dataloader
from switchbert.data.pretrain import CaptionPairsDataset, PretrainExample, PretrainLabels
from switchbert.data.refcoco import RefCOCODataset, RefExample, RefLabels
from switchbert.data.regions import MAX_REGIONS, Regions, box_iou, normalize_boxes, process_regions
from switchbert.data.retrieval import (RetrievalEvalDataset, RetrievalEvalLabels, RetrievalLabels,
                                       RetrievalTrainDataset)
from switchbert.data.tokenizer import encode, load_tokenizer
from switchbert.data.vqa import VQADataset, VQAExample, VQALabels
from switchbert.data.vqa_answers import AnswerVocab, build_answer_vocab, normalize_answer, soft_score

__all__ = [
    "AnswerVocab", "BadItemPolicy", "CaptionPairsDataset", "DataError", "DataWarning", "FeatureStore", "MAX_REGIONS",
    "PretrainExample", "PretrainLabels", "RefCOCODataset", "RefExample", "RefLabels", "RegionRecord", "Regions",
    "RetrievalEvalDataset", "RetrievalEvalLabels", "RetrievalLabels", "RetrievalTrainDataset", "VQADataset",
    "VQAExample", "VQALabels", "box_iou", "build_answer_vocab", "convert_store", "encode", "inspect_store",
    "load_tokenizer", "make_dataloader", "normalize_answer", "normalize_boxes", "open_feature_store",
    "process_regions", "read_regions", "soft_score", "write_store",
]
