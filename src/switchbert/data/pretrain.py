"""Pretraining pairs: Conceptual Captions captions + region features, with MLM, MRC and ITM (docs/method.md §6).

Dimension legend: B batch, T text tokens (<= 38), N regions (<= 36, the IMG token NOT included),
F feature size, C detector classes (1601 for BUTD).

The model prepends the IMG token, so the MRC targets here index ``region_hidden[:, 1:]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from switchbert.batch import Batch
from switchbert.data.caption_index import load_caption_index
from switchbert.data.errors import BadItemPolicy, DataError, PathLike, load_json
from switchbert.data.features import FeatureStore, record_regions
from switchbert.data.loader import TensorFields, drop_skipped, make_batch, new_tensor, pad_labels
from switchbert.data.masking import (IGNORE_INDEX, mask_regions, mask_tokens, sample_itm_negative, sample_rng,
                                     zero_rows_in_place)
from switchbert.data.regions import Regions
from switchbert.data.tokens import with_specials
from switchbert.heads.pretrain import flat_index


@dataclass
class PretrainExample:
    """One corrupted image-caption pair.

    Attributes:
        image_id: the image.
        text_ids: (T,) int64 caption ids after MLM corruption.
        mlm_labels: (T,) int64 original ids at MLM targets, -100 elsewhere (all -100 if mismatched).
        regions: the image's regions; features of zeroed MRC targets are 0 (see ``zeroed``), boxes
            kept; ``cls_prob`` None when ``mrc_probs`` is given.
        mrc_mask: (N,) bool MRC targets (all False if mismatched).
        itm_label: 1 if the caption belongs to the image, 0 if it was replaced.
        caption_image_id: the image the caption was written for.
        mrc_probs: (k, C) the detector's class distribution of the ``mrc_mask`` regions, in region
            order (the dataset reads only these rows; ``regions.cls_prob`` is then None). None = take
            them from ``regions.cls_prob``.
        zeroed: (N,) bool, rows of ``regions.features`` still to be zeroed when collated (the batch
            path, whose features view the store's pages until then); None = already applied.
    """

    image_id: str
    text_ids: np.ndarray
    mlm_labels: np.ndarray
    regions: Regions
    mrc_mask: np.ndarray
    itm_label: int
    caption_image_id: str
    mrc_probs: Optional[np.ndarray] = None
    zeroed: Optional[np.ndarray] = None


@dataclass
class PretrainLabels(TensorFields):
    """Targets of MLM, MRC-KL and ITM for one batch.

    Attributes:
        mlm_labels: (B, T) long, -100 = ignore.
        mrc_targets: (K_r, C) the detector's class distribution of each MRC target region of a matched
            pair, in ``mrc_index`` order, in the store's float type (float16 for the fast store);
            only the ~15% of regions that are targets travel. Labels built by hand may instead give the
            dense (B, N, C) distribution of every region; ``pretrain_loss`` takes either.
        mrc_mask: (B, N) bool, True = an MRC target region (never True for a mismatched pair).
        itm_labels: (B,) long, 1 = matched pair.
        image_ids: the B image ids.
        mlm_index: (K,) long flat positions b * T + t of the MLM targets of matched pairs, ascending.
        mrc_index: (K_r,) long flat positions b * N + n of the MRC targets of matched pairs, ascending.

    The two indices are what ``PretrainHeads`` gathers. Found here on the CPU, they spare the training
    step a ``nonzero`` on the device, which makes the host wait for the GPU (docs/performance.md). None only for
    labels built by hand; the heads then find the positions themselves.
    """

    mlm_labels: Tensor
    mrc_targets: Tensor
    mrc_mask: Tensor
    itm_labels: Tensor
    image_ids: list[str] = field(default_factory=list)
    mlm_index: Optional[Tensor] = None
    mrc_index: Optional[Tensor] = None

    def dense_mrc_targets(self) -> Tensor:
        """(B, N, C) float32 distributions, zero except at the target rows (the pre-compact layout)."""
        if self.mrc_targets.dim() == 3:
            return self.mrc_targets.float()
        B, N = self.mrc_mask.shape
        index = self.mrc_index if self.mrc_index is not None else flat_index(self.mrc_mask & (self.itm_labels == 1)[:, None])
        out = torch.zeros((B * N, self.mrc_targets.shape[-1]), dtype=torch.float32, device=self.mrc_targets.device)
        out[index] = self.mrc_targets.float()
        return out.view(B, N, -1)


def load_captions(path: PathLike) -> dict[str, str]:
    """A Conceptual Captions captions file: a JSON object image id -> caption."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(path, None, f"expected a JSON object image id -> caption, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


class CaptionPairsDataset(Dataset):
    """Image-caption pairs for pretraining, corrupted deterministically per (seed, epoch, index).

    Args:
        captions_path: ``caption_train.json`` / ``caption_valid.json`` (image id -> caption).
        store: the region features.
        tokenizer: from :func:`~switchbert.data.tokenizer.load_tokenizer`.
        max_text_len: text length cap including [CLS] and [SEP] (38 in the controlled setting).
        seed: masking seed; call :meth:`set_epoch` each epoch for fresh masks.
        mlm_prob, region_mask_prob, region_zero_prob, itm_mismatch_prob: docs/method.md §6 rates.
        mrc: produce MRC targets (needs a store with ``cls_prob``).
        skip_bad: skip bad items (counted, warned) instead of raising.
        index_cache: an ``.npz`` for the parsed and tokenised captions file (:mod:`~switchbert.data.caption_index`;
            reused while the file, the length cap and the vocabulary match, rewritten otherwise).
            None = read and tokenise the file at every build.
    """

    def __init__(
        self,
        captions_path: PathLike,
        store: FeatureStore,
        tokenizer,
        max_text_len: int = 38,
        max_regions: int = 36,
        seed: int = 0,
        mlm_prob: float = 0.15,
        region_mask_prob: float = 0.15,
        region_zero_prob: float = 0.9,
        itm_mismatch_prob: float = 0.5,
        mrc: bool = True,
        skip_bad: bool = False,
        index_cache: Optional[PathLike] = None,
    ) -> None:
        self.path = str(captions_path)
        self.store, self.tokenizer = store, tokenizer
        self.max_text_len, self.max_regions, self.seed, self.epoch = max_text_len, max_regions, seed, 0
        self.mlm_prob, self.region_mask_prob, self.region_zero_prob = mlm_prob, region_mask_prob, region_zero_prob
        self.itm_mismatch_prob, self.mrc = itm_mismatch_prob, mrc
        self.policy = BadItemPolicy(skip_bad)
        if mrc and store.num_classes is None:
            raise DataError(store.path, None, "MRC-KL needs the detector's class distribution (cls_prob); "
                                              "this store has none (pass mrc=False)")
        # Packed numpy tables, not lists of str: forked workers share them without copying
        # (switchbert.data.index). The captions are tokenised once here, not once per sample per epoch.
        table = load_caption_index(captions_path, tokenizer, max_text_len, index_cache)
        known = store.contains_many(table.image_ids)
        bad = table.empty | ~known
        for i in np.flatnonzero(bad):  # in file order, as a loop over the file would find them
            iid = table.image_ids[int(i)]
            err = (DataError(captions_path, iid, "empty caption") if table.empty[i] else
                   DataError(captions_path, iid, f"missing image id: not in the feature store {store.path}"))
            self.policy.handle(err)
        keep = np.flatnonzero(~bad)
        if not len(keep):
            raise DataError(captions_path, None, "no usable caption")
        everything = not bad.any()
        self.image_ids = table.image_ids if everything else table.image_ids.take(keep)
        self.captions = table.captions if everything else table.captions.take(keep)
        self.tokens = table.tokens if everything else table.tokens.take(keep)

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_epoch(self, epoch: int) -> None:
        """Selects the masks of ``epoch`` (they are a function of seed, epoch and index)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> Optional[PretrainExample]:
        with self.store.pages() as read:
            example = self._example(index, read)
            if example is not None:  # a copy off the store's pages (or in place on a fresh decode)
                example.regions.features = zero_rows_in_place(example.regions.features, example.zeroed)
                example.zeroed = None
        return example

    def read_batch(self, indices: Sequence[int]) -> tuple[Batch, PretrainLabels]:
        """``collate([self[i] for i in indices])``, equal to it, with each image's features copied once:
        from the store's pages straight into the batch tensor (the batch path of ``make_dataloader``).

        Raises:
            DataError: a bad item (without ``skip_bad``), or every item skipped.
        """
        with self.store.pages() as read:
            return self.collate([self._example(int(i), read) for i in indices])

    def _example(self, index: int, read) -> Optional[PretrainExample]:
        """Sample ``index`` with its regions as ``read`` returns them (views of the store's pages for a
        fast store) and the rows to zero in ``zeroed``, not yet applied; None if skipped as bad."""
        rng = sample_rng(self.seed, self.epoch, index)
        other = sample_itm_negative(rng, index, len(self), self.itm_mismatch_prob)
        cap_index = index if other is None else other
        image_id = self.image_ids[index]
        try:
            # With MRC the whole class distribution is read (checked, on the page) and only the target
            # rows (~15%) are copied out below.
            record = read(image_id, cls_prob=self.mrc)
            regions = record_regions(record, self.store.path, self.max_regions, require_regions=self.mrc)
        except DataError as err:
            self.policy.handle(err)
            return None
        probs, regions.cls_prob = regions.cls_prob, None
        ids = with_specials(self.tokens.row(cap_index))
        # Corrupt mismatched pairs exactly like matched ones and only drop their labels: if mismatched
        # captions came without [MASK] tokens, ITM could be solved by spotting [MASK].
        text_ids, mlm_labels = mask_tokens(ids, rng, self.mlm_prob)
        targets, zeroed = mask_regions(regions.num_regions, rng, self.region_mask_prob, self.region_zero_prob)
        matched = other is None
        if not self.mrc or not matched:
            targets = np.zeros_like(targets)
        if not matched:
            mlm_labels = np.full_like(mlm_labels, IGNORE_INDEX)
        rows = probs[np.flatnonzero(targets)] if self.mrc else None  # fancy indexing copies off the page
        return PretrainExample(image_id, text_ids, mlm_labels, regions, targets, int(matched),
                               self.image_ids[cap_index], rows, zeroed)

    def collate(self, examples: list[Optional[PretrainExample]]) -> tuple[Batch, PretrainLabels]:
        return collate_pretrain(examples, self.store.num_classes or 0)


def collate_pretrain(examples: list[Optional[PretrainExample]], num_classes: int) -> tuple[Batch, PretrainLabels]:
    """Pads examples into a :class:`Batch` and :class:`PretrainLabels` (skipped items dropped).

    Region features stay in the store's float type; MRC targets are the (K_r, C) distributions of the
    target regions of matched pairs only (about 15% of the regions), not a dense (B, N, C) tensor:
    ~3x fewer bytes per sample at 36 x 2048 with 1601 classes (BENCHMARKS.md, "Input pipeline").
    """
    examples = drop_skipped(examples)
    if not examples:
        raise DataError(None, None, "every item of the batch was skipped as bad")
    batch, _ = make_batch([e.text_ids for e in examples], [e.regions for e in examples],
                          [e.zeroed for e in examples])
    B, T = batch.text_ids.shape
    N = batch.region_mask.shape[1]
    mrc_mask = np.zeros((B, N), dtype=bool)
    rows = []  # the target regions' distributions, row-major (b, n): the order of mrc_index below
    dtype = np.float32
    for i, e in enumerate(examples):
        n = e.regions.num_regions
        mrc_mask[i, :n] = e.mrc_mask
        probs = e.mrc_probs if e.mrc_probs is not None else e.regions.cls_prob
        if probs is not None and num_classes:
            dtype = probs.dtype
            if e.itm_label == 1 and e.mrc_mask.any():
                rows.append(probs if e.mrc_probs is not None else probs[e.mrc_mask])
    mrc_targets = new_tensor((sum(len(r) for r in rows), num_classes),
                             torch.float16 if dtype == np.float16 else torch.float32, zero=False)
    if rows:
        np.concatenate(rows, out=mrc_targets.numpy())
    mrc_mask = torch.from_numpy(mrc_mask)
    mlm_labels = pad_labels([e.mlm_labels for e in examples], T, IGNORE_INDEX)
    itm_labels = torch.tensor([e.itm_label for e in examples], dtype=torch.long)
    # The targets left after losses.ignore_mismatched, which the training step applies (the dataset
    # already blanks mismatched pairs; this keeps the indices right for examples built otherwise).
    matched = (itm_labels == 1)[:, None]
    labels = PretrainLabels(
        mlm_labels=mlm_labels,
        mrc_targets=mrc_targets,
        mrc_mask=mrc_mask,
        itm_labels=itm_labels,
        image_ids=[e.image_id for e in examples],
        mlm_index=flat_index((mlm_labels != IGNORE_INDEX) & matched),
        mrc_index=flat_index(mrc_mask & matched),
    )
    return batch, labels
