"""Per-item indices without a Python object per item: packed strings, ragged token ids, id lookup.

At Conceptual Captions scale (2.7M images) a list of image ids and a list of captions hold ~5M Python
objects. DataLoader workers are forked: they share the parent's memory until they write to it, and
reading ``ids[i]`` writes (it increments the object's reference count), so each worker ends up with
its own copy of every page it touches: memory per worker grows with the dataset ("copy-on-read").
Here every index is a few numpy arrays, which reading never writes; workers share them for good.
Measured in BENCHMARKS.md ("Input pipeline at Conceptual Captions scale").

Dimension legend: n items, L total length (bytes or tokens) of all items.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence, Union

import numpy as np


class Ragged:
    """n variable-length rows of one numpy dtype, packed: ``values`` (L,) and ``offsets`` (n + 1,).

    Args:
        values: the rows one after the other.
        offsets: (n + 1,) int64, row i is ``values[offsets[i]:offsets[i + 1]]``.
    """

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values, self.offsets = values, np.asarray(offsets, dtype=np.int64)

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence], dtype) -> "Ragged":
        rows = [np.asarray(r, dtype=dtype) for r in rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        values = np.concatenate(rows) if rows else np.zeros(0, dtype=dtype)
        return cls(values.astype(dtype, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` (a view)."""
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        """(n,) int64 row lengths."""
        return np.diff(self.offsets)

    def take(self, index: np.ndarray) -> "Ragged":
        """The rows ``index`` (a (k,) integer array), packed anew."""
        index = np.asarray(index, dtype=np.int64)
        lens = self.lengths()[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        starts = self.offsets[:-1][index]
        # element j of the new values comes from starts[row(j)] + (j - offsets[row(j)])
        src = np.repeat(starts - offsets[:-1], lens) + np.arange(offsets[-1], dtype=np.int64)
        return Ragged(self.values[src], offsets)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + self.offsets.nbytes)


class StringTable:
    """n strings packed as UTF-8 bytes: indexing returns a new ``str``, nothing per item is kept.

    Behaves as a read-only sequence (``len``, ``[i]``, slices, iteration, ``==`` with a list).
    """

    def __init__(self, ragged: Ragged) -> None:
        self._rows = ragged

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> "StringTable":
        encoded = [s.encode("utf-8") for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(Ragged(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets))

    @classmethod
    def from_joined(cls, blob: bytes, sep: bytes = b"\n") -> "StringTable":
        """The table of ``sep.join(items)`` (no Python object per item is made)."""
        if not blob:
            return cls(Ragged(np.zeros(0, np.uint8), np.zeros(1, np.int64)))
        values = np.frombuffer(blob, dtype=np.uint8)
        cuts = np.flatnonzero(values == sep[0])
        starts = np.concatenate([[0], cuts + 1])
        ends = np.concatenate([cuts, [len(values)]])
        keep = np.ones(len(values), dtype=bool)
        keep[cuts] = False
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        return cls(Ragged(values[keep], offsets))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i: Union[int, slice]):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"string table index {i} out of range for {n} items")
        return self._rows.row(i).tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other) -> bool:
        if isinstance(other, StringTable):
            return (np.array_equal(self._rows.offsets, other._rows.offsets)
                    and np.array_equal(self._rows.values, other._rows.values))
        try:
            return len(other) == len(self) and all(a == b for a, b in zip(self, other))
        except TypeError:
            return NotImplemented

    def take(self, index: np.ndarray) -> "StringTable":
        return StringTable(self._rows.take(index))

    def fixed_width(self) -> np.ndarray:
        """(n,) numpy bytes array ``S<w>``, w = the longest item (for sorting and binary search)."""
        lens = self._rows.lengths()
        width = max(int(lens.max()) if len(lens) else 0, 1)
        mat = np.zeros((len(self), width), dtype=np.uint8)
        row = np.repeat(np.arange(len(self)), lens)
        col = np.arange(len(self._rows.values), dtype=np.int64) - np.repeat(self._rows.offsets[:-1], lens)
        mat[row, col] = self._rows.values
        return mat.view(f"S{width}").reshape(-1)

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes


class IdIndex:
    """Membership and position of string ids by binary search over a sorted numpy array.

    Args:
        ids: the ids in their order (positions are into this order). Duplicates keep the first.
    """

    def __init__(self, ids: StringTable) -> None:
        self.ids = ids
        keys = ids.fixed_width()
        self._order = np.argsort(keys, kind="stable")
        self._sorted = keys[self._order]

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: Union[Sequence[str], np.ndarray, "StringTable"]) -> np.ndarray:
        """(k,) int64 position of each id in the index, -1 where absent (vectorised)."""
        if len(self._sorted) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        if isinstance(ids, StringTable):  # no Python object per id
            width = self._sorted.dtype.itemsize
            too_long = ids._rows.lengths() > width
            keys = ids.fixed_width().astype(self._sorted.dtype) if len(ids) else np.zeros(0, self._sorted.dtype)
            return self._lookup(keys, too_long)
        query = np.asarray([i.encode("utf-8") if isinstance(i, str) else i for i in ids], dtype=object)
        # Longer than every stored id: cannot be one of them (and must not be truncated into a match).
        width = self._sorted.dtype.itemsize
        too_long = np.fromiter((len(q) > width for q in query), dtype=bool, count=len(query))
        keys = query.astype(self._sorted.dtype) if len(query) else np.zeros(0, self._sorted.dtype)
        return self._lookup(keys, too_long)

    def _lookup(self, keys: np.ndarray, too_long: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self._sorted, keys)
        at_c = np.minimum(at, len(self._sorted) - 1)
        found = (at < len(self._sorted)) & (self._sorted[at_c] == keys) & ~too_long
        return np.where(found, self._order[at_c], -1).astype(np.int64)

    def position(self, image_id: str) -> int:
        """The position of ``image_id``, -1 if absent."""
        key = image_id.encode("utf-8")
        if len(key) > self._sorted.dtype.itemsize or not len(self._sorted):
            return -1
        at = int(np.searchsorted(self._sorted, key))
        if at < len(self._sorted) and self._sorted[at] == key:
            return int(self._order[at])
        return -1

    def __contains__(self, image_id: object) -> bool:
        return self.position(str(image_id)) >= 0

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self._order.nbytes + self._sorted.nbytes)
