"""Pretraining corruption as pure functions of (input, generator): MLM, region masking, ITM (docs/method.md §6).

Determinism: a sample's corruption depends only on (seed, epoch, index) through
:func:`sample_rng`, never on worker count, batch order or previous samples, so a run can be replayed
exactly and every DataLoader worker draws the same masks for the same sample.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from switchbert.data.tokenizer import MASK_ID, SPECIAL_IDS, VOCAB_SIZE

_SPECIAL = np.zeros(VOCAB_SIZE, dtype=bool)
_SPECIAL[list(SPECIAL_IDS)] = True
"""Lookup table id -> special token: ~50x faster than ``np.isin`` on a caption (BENCHMARKS.md)."""

IGNORE_INDEX = -100
FIRST_WORD_ID = 999
"""Ids below 999 in bert-base-uncased are [PAD], [unusedN], [UNK], [CLS], [SEP], [MASK]; random
replacement tokens are drawn from the real word pieces at and above it."""


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


def mask_tokens(
    ids: np.ndarray,
    rng: np.random.Generator,
    mask_prob: float = 0.15,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
    vocab_size: int = VOCAB_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: each non-special token is a target with ``mask_prob``; a target becomes [MASK]
    (80%), a random word piece (10%) or stays itself (10%).

    Args:
        ids: (T,) int token ids ([CLS] ... [SEP]).
        rng: the sample's generator.

    Returns:
        input_ids: (T,) int64, the corrupted ids.
        labels: (T,) int64, the original id at targets and ``IGNORE_INDEX`` (-100) elsewhere.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and 0 <= ids.min() and ids.max() < VOCAB_SIZE:
        candidates = ~_SPECIAL[ids]
    else:  # ids outside the shipped vocabulary (a custom tokenizer): the general test
        candidates = ~np.isin(ids, list(SPECIAL_IDS))
    size = ids.shape[0] if ids.ndim == 1 else ids.shape  # an int: the same draws, without numpy's shape handling
    target = candidates & (rng.random(size) < mask_prob)
    action = rng.random(size)
    random_ids = rng.integers(FIRST_WORD_ID, vocab_size, size=size)
    inputs = ids.copy()
    to_mask = target & (action < mask_token_prob)
    to_random = target & (action >= mask_token_prob) & (action < mask_token_prob + random_token_prob)
    inputs[to_mask] = MASK_ID
    inputs[to_random] = random_ids[to_random]
    labels = np.where(target, ids, IGNORE_INDEX)
    return inputs, labels


def mask_regions(
    num_regions: int, rng: np.random.Generator, mask_prob: float = 0.15, zero_prob: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """MRC targets: each real region is a target with ``mask_prob``; a target's feature is zeroed with
    ``zero_prob`` (its box is always kept).

    Returns:
        targets: (n,) bool, the regions whose class distribution is predicted.
        zeroed: (n,) bool, subset of ``targets`` whose features are set to 0.
    """
    targets = rng.random(num_regions) < mask_prob
    zeroed = targets & (rng.random(num_regions) < zero_prob)
    return targets, zeroed


def apply_region_mask(features: np.ndarray, zeroed: np.ndarray) -> np.ndarray:
    """A copy of (n, F) ``features`` with the ``zeroed`` rows set to 0."""
    out = features.copy()
    out[zeroed] = 0.0
    return out


def zero_rows_in_place(features: np.ndarray, zeroed: np.ndarray) -> np.ndarray:
    """``features`` with the ``zeroed`` rows set to 0, in place when the array is writable (a fresh
    decode), else in a copy (:func:`apply_region_mask`). Same values either way."""
    if not features.flags.writeable:
        return apply_region_mask(features, zeroed)
    if zeroed.any():
        features[zeroed] = 0.0
    return features


def sample_itm_negative(
    rng: np.random.Generator, index: int, num_items: int, mismatch_prob: float = 0.5
) -> Optional[int]:
    """With ``mismatch_prob``, the index of another item whose caption replaces this one's; else None.

    The other index is uniform over the ``num_items - 1`` items other than ``index``.
    """
    if num_items < 2 or rng.random() >= mismatch_prob:
        return None
    other = int(rng.integers(0, num_items - 1))
    return other + 1 if other >= index else other
