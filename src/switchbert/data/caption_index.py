"""A captions file (image id -> caption) as packed numpy tables, tokenised once, optionally cached.

Reading Conceptual Captions' JSON makes ~5.4M Python objects (2.7M ids, 2.7M captions) and tokenising
it takes minutes on a small machine. With ``cache_path`` both happen once: later builds load the
tables from an ``.npz`` without parsing the JSON, so the process that forks the DataLoader workers
never holds (nor leaves holes from) a Python object per image (BENCHMARKS.md, "Input pipeline at
Conceptual Captions scale"). The cache is used only while the captions file (path, size, mtime), the
length cap and the vocabulary match its fingerprint.

Dimension legend: n captions in the file.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from switchbert.data.errors import DataError, DataWarning, PathLike, load_json
from switchbert.data.index import Ragged, StringTable
from switchbert.data.tokens import caption_tokens

_VERSION = 1


@dataclass
class CaptionIndex:
    """Every entry of a captions file, in file order.

    Attributes:
        image_ids: the n image ids.
        captions: the n captions ("" where the value was not a string).
        tokens: the n captions' word pieces (no [CLS]/[SEP]), each capped at max_length - 2.
        empty: (n,) bool, the caption is empty, blank or not a string.
    """

    image_ids: StringTable
    captions: StringTable
    tokens: Ragged
    empty: np.ndarray


def load_caption_index(path: PathLike, tokenizer, max_length: int,
                       cache_path: Optional[PathLike] = None) -> CaptionIndex:
    """Reads ``path`` (a JSON object image id -> caption) into a :class:`CaptionIndex`.

    Raises:
        DataError: the file is missing, not JSON, or not an object.
    """
    fingerprint = _fingerprint(path, tokenizer, max_length)
    if cache_path is not None and Path(cache_path).exists():
        try:
            with np.load(cache_path) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return CaptionIndex(
                        StringTable(Ragged(z["id_values"], z["id_offsets"])),
                        StringTable(Ragged(z["caption_values"], z["caption_offsets"])),
                        Ragged(z["token_values"], z["token_offsets"]), z["empty"])
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: read the file below
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(path, None, f"expected a JSON object image id -> caption, got {type(data).__name__}")
    ids = StringTable.from_strings(str(k) for k in data)
    empty = np.fromiter((not isinstance(c, str) or not c.strip() for c in data.values()), dtype=bool, count=len(data))
    captions = StringTable.from_strings(c if isinstance(c, str) else "" for c in data.values())
    del data
    index = CaptionIndex(ids, captions, caption_tokens(captions, tokenizer, max_length), empty)
    if cache_path is not None:
        _save(index, fingerprint, Path(cache_path))
    return index


def _save(index: CaptionIndex, fingerprint: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")  # one writer per process; atomic rename
        ids, caps = index.image_ids._rows, index.captions._rows
        np.savez(tmp, fingerprint=np.array(fingerprint), id_values=ids.values, id_offsets=ids.offsets,
                 caption_values=caps.values, caption_offsets=caps.offsets, token_values=index.tokens.values,
                 token_offsets=index.tokens.offsets, empty=index.empty)
        tmp.replace(path)
    except OSError as exc:
        warnings.warn(f"could not write the caption index cache {path}: {exc}", DataWarning, stacklevel=3)


def _fingerprint(path: PathLike, tokenizer, max_length: int) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise DataError(path, None, "file not found") from exc
    h = hashlib.sha1(f"v{_VERSION}|{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{max_length}|".encode())
    h.update(hashlib.sha1(tokenizer.to_str().encode()).digest())
    return h.hexdigest()
