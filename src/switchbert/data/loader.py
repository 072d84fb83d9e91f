"""Collation helpers, the label base class, and the DataLoader factory.

Dimension legend: B batch, T text tokens (padded to the longest in the batch), N regions (padded to
the most in the batch, at most 36), F feature size, C detector classes.
"""

from __future__ import annotations

import warnings
from dataclasses import fields, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from switchbert.batch import Batch
from switchbert.data.regions import BOX_DIM, Regions
from switchbert.data.tokenizer import PAD_ID


class TensorFields:
    """Mixin for label dataclasses: ``to`` and ``pin_memory`` over their tensor fields."""

    def to(self, device, non_blocking: bool = False):
        return replace(self, **{f.name: v.to(device, non_blocking=non_blocking)
                                for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor)})

    def pin_memory(self):
        return replace(self, **{f.name: v.pin_memory()
                                for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor)})


def pad_text(token_ids: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """(B,) variable-length id arrays -> ids (B, T) long padded with [PAD], mask (B, T) bool."""
    T = max(len(t) for t in token_ids)
    ids = torch.full((len(token_ids), T), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(token_ids), T), dtype=torch.bool)
    for i, t in enumerate(token_ids):
        ids[i, : len(t)] = torch.as_tensor(np.asarray(t, dtype=np.int64))
        mask[i, : len(t)] = True
    return ids, mask


def pad_labels(labels: Sequence[np.ndarray], length: int, fill: int) -> Tensor:
    """(B,) variable-length int arrays -> (B, length) long padded with ``fill``."""
    out = torch.full((len(labels), length), fill, dtype=torch.long)
    for i, t in enumerate(labels):
        out[i, : len(t)] = torch.as_tensor(np.asarray(t, dtype=np.int64))
    return out


def pad_regions(regions: Sequence[Regions], feat_dim: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stacks regions, zero-padding to the most regions in the batch.

    Returns:
        feats (B, N, F) float32, boxes (B, N, 5) float32, mask (B, N) bool, boxes_px (B, N, 4) float32.
    """
    B = len(regions)
    N = max(r.num_regions for r in regions)
    F = feat_dim or next((r.features.shape[1] for r in regions if r.features.ndim == 2), 0)
    feats = np.zeros((B, N, F), dtype=np.float32)
    boxes = np.zeros((B, N, BOX_DIM), dtype=np.float32)
    boxes_px = np.zeros((B, N, 4), dtype=np.float32)
    mask = np.zeros((B, N), dtype=bool)
    for i, r in enumerate(regions):
        n = r.num_regions
        feats[i, :n], boxes[i, :n], boxes_px[i, :n], mask[i, :n] = r.features, r.boxes, r.boxes_px, True
    return torch.from_numpy(feats), torch.from_numpy(boxes), torch.from_numpy(mask), torch.from_numpy(boxes_px)


def make_batch(token_ids: Sequence[np.ndarray], regions: Sequence[Regions]) -> tuple[Batch, Tensor]:
    """A :class:`Batch` from per-sample ids and regions; also returns boxes_px (B, N, 4)."""
    ids, tmask = pad_text(token_ids)
    feats, boxes, rmask, boxes_px = pad_regions(regions)
    return Batch(ids, tmask, feats, boxes, rmask), boxes_px


def drop_skipped(examples: Sequence) -> list:
    """Removes the ``None`` that datasets return for items skipped under ``skip_bad``."""
    kept = [e for e in examples if e is not None]
    if len(kept) < len(examples):
        warnings.warn(f"batch lost {len(examples) - len(kept)} skipped bad items", stacklevel=2)
    return kept


def _worker_init(worker_id: int) -> None:
    # Masks come from per-sample generators (masking.sample_rng); this only keeps torch/numpy global
    # state distinct per worker for any user code that draws from it.
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2**32)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
    sampler: Optional[Sampler] = None,
    drop_last: bool = False,
    collate_fn: Optional[Callable] = None,
    persistent_workers: bool = False,
    prefetch_factor: Optional[int] = None,
) -> DataLoader:
    """A DataLoader over one of this package's datasets.

    Args:
        dataset: a dataset with a ``collate`` method (used unless ``collate_fn`` is given).
        shuffle: shuffle with a generator seeded by ``seed`` (ignored when ``sampler`` is given, e.g. a
            ``DistributedSampler``; call its ``set_epoch`` and the dataset's ``set_epoch`` each epoch).
        pin_memory: pin batches and labels (both implement ``pin_memory``).

    Returns:
        A DataLoader yielding ``(Batch, labels)``.
    """
    collate = collate_fn or getattr(dataset, "collate", None)
    if collate is None:
        raise ValueError(f"{type(dataset).__name__} has no collate method; pass collate_fn")
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=_worker_init, persistent_workers=persistent_workers)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate,
        generator=generator,
        **kwargs,
    )
