"""Captions tokenised once, packed: a :class:`~switchbert.data.index.Ragged` of word-piece ids.

Tokenising a caption costs ~70 us on one core; per sample, every epoch, that was a large share of a
loader worker's time (BENCHMARKS.md, "Input pipeline"). The whole caption file is tokenised when the
dataset is built instead (the Rust tokenizer runs batches on every core), and optionally cached on
disk: at Conceptual Captions scale (2.7M captions) the first build costs minutes on a 2-core machine.

Dimension legend: n captions, L word pieces of all captions together (each capped at max_length - 2).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from switchbert.data.errors import DataWarning, PathLike
from switchbert.data.index import Ragged, StringTable
from switchbert.data.tokenizer import CLS_ID, SEP_ID

CHUNK = 20_000
"""Captions per ``encode_batch`` call: bounds the memory of the tokenizer's Encoding objects."""


def caption_tokens(captions: StringTable, tokenizer, max_length: int,
                   cache_path: Optional[PathLike] = None) -> Ragged:
    """The word pieces of every caption (no [CLS]/[SEP]), each truncated to ``max_length - 2``.

    Args:
        captions: the captions.
        tokenizer: from :func:`~switchbert.data.tokenizer.load_tokenizer`.
        max_length: the length cap including [CLS] and [SEP] (what ``tokenizer.encode`` gets).
        cache_path: optional ``.npz``; used when its fingerprint (captions, cap, vocabulary) matches.

    Returns:
        Rows of uint16 ids (int32 for a vocabulary over 65,535 entries); see :func:`with_specials`.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
    fingerprint = _fingerprint(captions, tokenizer, max_length)
    if cache_path is not None and Path(cache_path).exists():
        try:
            with np.load(cache_path) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return Ragged(z["values"], z["offsets"])
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: tokenise below
    dtype = np.uint16 if tokenizer.get_vocab_size() <= np.iinfo(np.uint16).max + 1 else np.int32
    keep = max_length - 2
    lengths = np.zeros(len(captions), dtype=np.int64)
    parts = []
    for start in range(0, len(captions), CHUNK):
        encs = tokenizer.encode_batch(captions[start:start + CHUNK], add_special_tokens=False)
        for j, e in enumerate(encs):
            ids = e.ids[:keep]
            lengths[start + j] = len(ids)
            parts.append(np.asarray(ids, dtype=dtype))
    offsets = np.zeros(len(captions) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = Ragged(np.concatenate(parts) if parts else np.zeros(0, dtype=dtype), offsets)
    if cache_path is not None:
        try:
            Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(str(cache_path) + ".tmp.npz")
            np.savez(tmp, fingerprint=np.array(fingerprint), values=tokens.values, offsets=tokens.offsets)
            tmp.replace(cache_path)
        except OSError as exc:
            warnings.warn(f"could not write the token cache {cache_path}: {exc}", DataWarning, stacklevel=2)
    return tokens


def with_specials(pieces: np.ndarray) -> np.ndarray:
    """(k,) word pieces -> (k + 2,) int64 ``[CLS] pieces [SEP]`` (what ``tokenizer.encode`` returns)."""
    out = np.empty(len(pieces) + 2, dtype=np.int64)
    out[0], out[1:-1], out[-1] = CLS_ID, pieces, SEP_ID
    return out


def _fingerprint(captions: StringTable, tokenizer, max_length: int) -> str:
    h = hashlib.sha1()
    rows = captions._rows
    h.update(rows.offsets.tobytes())
    h.update(rows.values.tobytes())
    h.update(f"|{max_length}|".encode())
    h.update(hashlib.sha1(tokenizer.to_str().encode()).digest())
    return h.hexdigest()
