"""Heads on top of an ``EncoderOutput``: pretraining (MLM, MRC, ITM) and fine-tuning (VQA, retrieval, RefExp).

Heads produce logits only; the losses are in ``switchbert.heads.losses``.
"""

from switchbert.heads.pretrain import (
    IGNORE_INDEX,
    NUM_DETECTOR_CLASSES,
    ITMHead,
    MLMHead,
    MRCHead,
    PretrainHeads,
    PretrainLogits,
    flat_index,
    pretrain_heads_for,
)
from switchbert.heads.tasks import (
    TASKS,
    VQA_NUM_ANSWERS,
    RefExpHead,
    RetrievalHead,
    VQAHead,
    build_head,
)

__all__ = [
    "IGNORE_INDEX",
    "NUM_DETECTOR_CLASSES",
    "ITMHead",
    "MLMHead",
    "MRCHead",
    "PretrainHeads",
    "PretrainLogits",
    "TASKS",
    "VQA_NUM_ANSWERS",
    "RefExpHead",
    "RetrievalHead",
    "VQAHead",
    "build_head",
    "flat_index",
    "pretrain_heads_for",
]
