"""Shared test utilities: float64 batches and tiny models without dropout."""

from __future__ import annotations

from typing import Any

import torch

import switchbert
from switchbert.batch import Batch
from switchbert.data.random_batch import random_batch

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, fusion_dropout=0.0)


def tiny_model(dtype: torch.dtype = torch.float64, seed: int = 0, **overrides: Any):
    torch.manual_seed(seed)
    kwargs = {**NO_DROPOUT, **overrides}
    return switchbert.create_model("switchbert-tiny", **kwargs).to(dtype)


def batch_for(model, dtype: torch.dtype = torch.float64, **kwargs: Any) -> Batch:
    b = random_batch(model.config, **kwargs)
    b.region_feats = b.region_feats.to(dtype)
    b.region_boxes = b.region_boxes.to(dtype)
    return b
