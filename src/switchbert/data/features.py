"""Region-feature stores: one reader interface over the formats users have (docs/method.md §8), plus our own.

Formats
    ``volta``      VOLTA/ViLBERT LMDB (a directory with ``data.mdb``): key ``keys`` -> pickled list of
                   image ids; key ``<image id>`` -> pickled dict (``image_h``/``img_h``,
                   ``image_w``/``img_w``, ``num_boxes``, ``boxes`` (n, 4) pixel x1y1x2y2, ``features``
                   (n, F) float32, optional ``cls_prob`` (n, C)), arrays as raw numpy.
    ``volta-b64``  the same with every array as a base64 string of its float32 bytes (the ViLBERT
                   multi-task variant). Readers detect the variant per record.
    ``h5``         bottom-up-attention HDF5: one group per image id with ``features``, ``boxes``,
                   ``img_w``, ``img_h`` (datasets or attributes), optional ``cls_prob``.
    ``fast``       ours: LMDB whose records are one packed binary blob (header, float32 boxes, float16
                   features, float16 class distribution). No pickle and no base64 on the read path;
                   half the bytes of float32. See BENCHMARKS.md (Data layer) for the measurement.

The two pickle-based VOLTA variants are read with the restricted unpickler of
:mod:`switchbert.data.safe_pickle` (numpy arrays and built-in values only), so a crafted store cannot
run code. Every reader opens its file lazily in the process that reads (read-only, ``lock=False`` for LMDB), so a
store built in the main process is safe to hand to DataLoader workers. Every bad record raises
:class:`~switchbert.data.errors.DataError` naming the store and the image id.

Dimension legend: n regions of one image, F feature size, C detector classes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pickle
import struct
import warnings
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np
import torch

from switchbert.data.errors import BadItemPolicy, DataError, PathLike
from switchbert.data.index import IdIndex, StringTable
from switchbert.data.safe_pickle import safe_loads

FORMATS = ("fast", "volta", "volta-b64", "h5")

_FAST_META_KEY = b"__switchbert_meta__"
_FAST_IDS_KEY = b"__switchbert_ids__"
_FAST_MAGIC = b"SBF1"
_FAST_HEADER = struct.Struct("<4sHIIff")  # magic, n, F, C, image_w, image_h
_VOLTA_EXTRACT_KEY = b"__switchbert_extract__"
_H5_LABELS = (("object_ids", "objects_id"), ("object_conf", "objects_conf"), ("attr_ids", "attrs_id"),
              ("attr_conf", "attrs_conf"))


@dataclass
class RegionRecord:
    """One image's detector output as stored.

    Attributes:
        image_id: the store key (always a string).
        features: (n, F) float32 (float16 from ``get(..., native=True)`` on a float16 store).
        boxes_px: (n, 4) float32 pixel x1y1x2y2.
        image_w, image_h: image size in pixels.
        cls_prob: (n, C) detector class distribution (dtype as ``features``), or None.
    """

    image_id: str
    features: np.ndarray
    boxes_px: np.ndarray
    image_w: float
    image_h: float
    cls_prob: Optional[np.ndarray] = None

    @property
    def num_regions(self) -> int:
        return int(self.features.shape[0])


BOX_TOLERANCE = 0.05
"""How far (as a fraction of the image side, plus one pixel) a box may reach outside the image.
Detectors emit boxes a pixel or so outside, which ``normalize_boxes`` clips; a box further out means
the record's boxes or image size are wrong (other units, another image size, swapped axes)."""


def validate_record(record: RegionRecord, path: PathLike, feat_dim: Optional[int],
                    num_classes: Optional[int] = None, cls_prob: bool = True) -> RegionRecord:
    """Checks shapes, sizes and values; raises DataError naming ``path`` and the image id.

    Args:
        feat_dim, num_classes: the store's feature size and class count (from its metadata or first
            record); every record must agree, so a batch never mixes shapes.

    Checked: features (n, F) finite; boxes (n, 4) finite, x1 < x2 and y1 < y2 (no inverted or
    zero-area box), inside the image up to ``BOX_TOLERANCE``; the image size finite and positive;
    ``cls_prob`` (n, C) with the store's C, finite and non-negative, present iff the store has one.
    ``cls_prob=False``: the record was read without its distribution (``get(..., cls_prob=False)``),
    which is then not checked here (``FeatureStore.cls_prob_rows`` and ``pages`` with it check it).
    """
    if not cls_prob:
        num_classes = None
    iid = record.image_id
    f, b, p = record.features, record.boxes_px, record.cls_prob
    if f.ndim != 2:
        raise DataError(path, iid, f"wrong dimensions: features have shape {f.shape}, expected (n, F)")
    n = f.shape[0]
    if feat_dim is not None and f.shape[1] != feat_dim:
        raise DataError(path, iid, f"wrong dimensions: feature size {f.shape[1]}, the store's is {feat_dim}")
    if b.shape != (n, 4):
        hint = " (stored transposed?)" if b.shape == (4, n) else ""
        raise DataError(path, iid, f"wrong dimensions: boxes have shape {b.shape}, expected ({n}, 4){hint}")
    if p is not None and (p.ndim != 2 or p.shape[0] != n):
        raise DataError(path, iid, f"wrong dimensions: cls_prob has shape {p.shape}, expected ({n}, C)")
    if n == 0:
        # No region, nothing to check: writers store its distribution as None, (0, C) or (0, 0); give
        # every such record the store's (0, C) so collation sees one shape.
        record.cls_prob = p = None if num_classes is None else np.zeros((0, num_classes), np.float32)
    elif num_classes is not None:
        if p is None:
            raise DataError(path, iid, f"wrong dimensions: no cls_prob, the store's records have {num_classes} classes")
        if p.shape[1] != num_classes:
            raise DataError(path, iid, f"wrong dimensions: cls_prob has {p.shape[1]} classes, the store's is {num_classes}")
    w, h = record.image_w, record.image_h
    if not (np.isfinite(w) and np.isfinite(h) and w > 0 and h > 0):
        raise DataError(path, iid, f"corrupt record: image size {w}x{h} is not finite and positive")
    # A NaN feature would train silently on garbage; the check costs a few microseconds per image.
    if not _all_finite(f) or not np.isfinite(b).all():
        raise DataError(path, iid, "corrupt record: features or boxes contain NaN/inf")
    if p is not None and p.size and not _finite_non_negative(p):
        # A NaN target would make the region an MRC target whose KL loss is silently 0 (or NaN).
        raise DataError(path, iid, "corrupt record: cls_prob contains NaN/inf or negative values")
    if n:
        _check_boxes(b, float(w), float(h), path, iid)
    return record


_FP16_EXPONENT = 0x7C00
"""float16 bits: exponent all ones = inf or NaN. Checks of float16 arrays work on these bits, because
numpy's float16 arithmetic is emulated: ``isfinite`` on 36 x 2048 float16 takes ~330 us, ``min`` ~850 us,
the unsigned maximum of the raw bits ~3 us (BENCHMARKS.md, "Input pipeline")."""


def _all_finite(x: np.ndarray) -> bool:
    if x.dtype != np.float16:
        return bool(np.isfinite(x).all())
    if not x.size:
        return True
    bits = x.view(np.uint16)
    # Fast path: the largest bit pattern below the exponent mask means every value is a finite
    # non-negative number (BUTD features are post-ReLU); otherwise clear the sign bits and look again.
    return bool(bits.max() < _FP16_EXPONENT) or bool((bits & 0x7FFF).max() < _FP16_EXPONENT)


def _finite_non_negative(x: np.ndarray) -> bool:
    """All entries finite and >= 0 (-0.0 included)."""
    if x.dtype == np.float16:
        bits = x.view(np.uint16)
        if bits.max() < _FP16_EXPONENT:  # no sign bit, no inf/NaN exponent
            return True
        return bool(_all_finite(x)) and bool(np.all(x >= 0))
    # min() is NaN when any entry is (so NaN fails ">= 0"); two reductions, no temporary arrays.
    return bool(x.min() >= 0 and x.max() < np.inf)


def _check_boxes(b: np.ndarray, w: float, h: float, path: PathLike, iid: str) -> None:
    """Inverted, zero-area and far-outside boxes: normalize_boxes would clip them to a silent wrong box."""
    tx, ty = BOX_TOLERANCE * w + 1.0, BOX_TOLERANCE * h + 1.0
    lo, hi = b.min(axis=0), b.max(axis=0)  # fast path: three small reductions (~2 us for 36 boxes)
    if ((b[:, 2:] - b[:, :2]).min() > 0 and lo[0] >= -tx and lo[1] >= -ty and hi[2] <= w + tx
            and hi[3] <= h + ty):
        return
    bad = np.flatnonzero((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
    if bad.size:
        i = int(bad[0])
        kind = "a zero-area" if b[i, 2] == b[i, 0] or b[i, 3] == b[i, 1] else "an inverted"
        raise DataError(path, iid, f"bad box: region {i} has {kind} box {b[i].tolist()} (x1y1x2y2 pixels; "
                                   f"{bad.size} such boxes in this record)")
    out = np.flatnonzero((b[:, 0] < -tx) | (b[:, 1] < -ty) | (b[:, 2] > w + tx) | (b[:, 3] > h + ty))
    if out.size:
        i = int(out[0])
        raise DataError(path, iid, f"bad box: region {i} has box {b[i].tolist()} outside the {w:g}x{h:g} image "
                                   f"({out.size} such boxes in this record; pixel x1y1x2y2 expected)")


class FeatureStore(ABC):
    """Read-only access to per-image region features, keyed by image id (a string)."""

    format: str = "?"

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        # The ids as numpy arrays, not a list and a set of 2.7M str: forked DataLoader workers share
        # them for good (switchbert.data.index, "copy-on-read").
        self._ids: StringTable = StringTable.from_strings([])
        self._index = IdIndex(self._ids)
        self.feat_dim: Optional[int] = None
        self.num_classes: Optional[int] = None

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """Every image id, in store order."""
        return list(self._ids)

    def id_table(self) -> StringTable:
        """Every image id, in store order, as a packed table (no list of str)."""
        return self._ids

    def __contains__(self, image_id: object) -> bool:
        return str(image_id) in self._index

    def contains_many(self, image_ids) -> np.ndarray:
        """(k,) bool: which of ``image_ids`` (strings, or a StringTable) the store holds, in one
        vectorised search."""
        if not isinstance(image_ids, StringTable):
            image_ids = [str(i) for i in image_ids]
        return self._index.positions(image_ids) >= 0

    def get(self, image_id: object, native: bool = False, cls_prob: bool = True) -> RegionRecord:
        """The record of ``image_id``; DataError if missing or corrupt.

        Args:
            native: features and ``cls_prob`` in the store's own float type (float16 for the fast
                store, which the datasets hand to the model as is: half the bytes through the loader);
                False = float32.
            cls_prob: False = leave the class distribution out (``cls_prob`` None, not read where the
                format allows): the tasks other than pretraining do not use it, and pretraining copies
                only its MRC targets' rows (:meth:`pages`, :meth:`cls_prob_rows`).
        """
        iid = str(image_id)
        if iid not in self:
            raise DataError(self.path, iid, "missing image id: not in the feature store")
        record = self._read_native(iid, cls_prob) if native else self._read(iid)
        if not cls_prob:
            record.cls_prob = None
        return validate_record(record, self.path, self.feat_dim, self.num_classes, cls_prob=cls_prob)

    def cls_prob_rows(self, image_id: object, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of the record's class distribution, in the store's float type: (k, C).

        The whole distribution is checked (finite, non-negative) as :meth:`get` checks it, so a bad
        record fails whichever rows are asked for; only the k rows are copied (from the LMDB page for a
        fast store, :meth:`pages`). DataError if missing or corrupt.

        Args:
            rows: (k,) int indices of regions (in store order).
        """
        rows = np.asarray(rows, dtype=np.int64)
        with self.pages() as read:
            record = read(image_id)
            if record.cls_prob is None:
                raise DataError(self.path, str(image_id), "no cls_prob: the store has no class distributions")
            n = record.num_regions
            if rows.size and (rows.min() < 0 or rows.max() >= n):
                raise IndexError(f"{self.path}: image {image_id} has {n} regions, rows {rows.tolist()} asked for")
            return record.cls_prob[rows]  # fancy indexing copies, off the page

    @contextmanager
    def pages(self) -> Iterator[Callable[..., RegionRecord]]:
        """A reader for a batch of records: ``read(image_id, cls_prob=True)`` -> a checked record, as
        :meth:`get` returns it with ``native=True``.

        Here each record is a fresh copy; :class:`FastStore` opens one read transaction for the
        block and returns records whose features and ``cls_prob`` view its LMDB pages, valid only
        inside the block: a batch reader copies them straight into the batch, one copy instead of
        a decode and a collate (BENCHMARKS.md, "Input pipeline").
        """
        yield lambda image_id, cls_prob=True: self.get(image_id, native=True, cls_prob=cls_prob)

    def __iter__(self) -> Iterator[RegionRecord]:
        for iid in self._ids:
            yield self.get(iid)

    @abstractmethod
    def _read(self, image_id: str) -> RegionRecord:
        """Reads and decodes one record (the id is known to exist), arrays in float32."""

    def _read_native(self, image_id: str, cls_prob: bool = True) -> RegionRecord:
        """Like ``_read``, features and class distribution in the store's float type; without the
        distribution (None) when ``cls_prob`` is False and the format can skip it."""
        return self._read(image_id)

    def close(self) -> None:
        """Releases file handles (they reopen lazily on the next read)."""

    def __getstate__(self) -> dict:
        # Handles must not cross a fork/pickle: each worker reopens its own.
        state = self.__dict__.copy()
        for key in [k for k in state if k.startswith("_handle")]:
            state[key] = None
        return state

    def _set_ids(self, ids: Union[Iterable[object], StringTable]) -> None:
        self._ids = ids if isinstance(ids, StringTable) else StringTable.from_strings(str(i) for i in ids)
        self._index = IdIndex(self._ids)


# --------------------------------------------------------------------------------------------- LMDB
_ENVS: dict[str, tuple[int, object]] = {}
"""One read-only LMDB environment per (store path, process). py-lmdb refuses to open a path twice in
a process, and LMDB handles must not cross fork, so every reader of a path shares this entry and a
forked DataLoader worker replaces its parent's."""


def _lmdb_env(path: Path):
    import lmdb

    key = os.path.realpath(path)
    entry = _ENVS.get(key)
    if entry is not None and entry[0] == os.getpid():
        return entry[1]
    if entry is not None:  # inherited through fork: drop the parent's mapping in this process
        try:
            entry[1].close()
        except Exception:  # noqa: BLE001 - best effort; the parent keeps its own handle
            pass
    if not (Path(path) / "data.mdb").exists():
        raise DataError(path, None, "not an LMDB store: no data.mdb in this directory")
    # readahead stays on (unlike VOLTA's readers): a record of 36 x 2048 spans ~40 contiguous pages, and
    # reading them in one go is 3x faster from a cold page cache (BENCHMARKS.md (Data layer)).
    if (Path(path) / "data.mdb").is_file() and os.path.getsize(Path(path) / "data.mdb") == 0:
        raise DataError(path, None, "truncated LMDB store: data.mdb is empty (0 bytes)")
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=True, meminit=False, max_readers=512)
    except lmdb.Error as exc:
        raise DataError(path, None, f"not a readable LMDB store: {exc}") from exc
    _check_lmdb_size(path, env)
    _ENVS[key] = (os.getpid(), env)
    return env


def _check_lmdb_size(path: Path, env) -> None:
    """Refuses a truncated ``data.mdb`` before any page is read.

    LMDB maps the file and reads pages in place; a page past the end of a truncated file is a SIGBUS
    that kills the process (no exception to catch). The meta page records the last page in use, so
    the file must hold at least ``(last_pgno + 1) * page size`` bytes.
    """
    size = os.path.getsize(Path(path) / "data.mdb")
    need = (int(env.info()["last_pgno"]) + 1) * int(env.stat()["psize"])
    if size < need:
        env.close()
        raise DataError(path, None, f"truncated LMDB store: data.mdb is {size} bytes, its header says the "
                                    f"data reaches {need} bytes (an interrupted copy or download?)")


def _close_lmdb_env(path: Path) -> None:
    entry = _ENVS.pop(os.path.realpath(path), None)
    if entry is not None and entry[0] == os.getpid():
        entry[1].close()


class _LMDBMixin:
    path: Path

    def _env(self):
        # Fast path without os.path.realpath (tens of microseconds per call): the shared entry for
        # this path, if it was opened by this process.
        key = self.__dict__.get("_env_key")
        if key is None:
            key = self._env_key = os.path.realpath(self.path)
        entry = _ENVS.get(key)
        if entry is not None and entry[0] == os.getpid():
            return entry[1]
        return _lmdb_env(self.path)

    def _raw(self, key: bytes) -> Optional[bytes]:
        with self._env().begin(buffers=False) as txn:
            return txn.get(key)

    def close(self) -> None:
        """Closes this path's environment in this process (every reader of the path reopens lazily)."""
        _close_lmdb_env(self.path)


def _decode_b64_array(value: object, dtype=np.float32) -> np.ndarray:
    raw = value.encode() if isinstance(value, str) else value
    return np.frombuffer(base64.b64decode(raw, validate=True), dtype=dtype)


_PY2_ENCODING = "latin1"
"""How Python 2 ``str`` in VOLTA pickles is decoded: numpy arrays pickled by Python 2 hold their bytes
as ``str``, which only latin-1 maps back byte for byte (numpy's advice; Python 3 pickles hold bytes
and are unaffected)."""


class VoltaLMDBStore(_LMDBMixin, FeatureStore):
    """VOLTA/ViLBERT LMDB, raw-numpy or base64 arrays (detected per record)."""

    format = "volta"

    def __init__(self, path: PathLike) -> None:
        super().__init__(path)
        blob = self._raw(b"keys")
        if blob is None:
            raise DataError(self.path, "keys", "not a VOLTA feature LMDB: no 'keys' entry")
        # Restricted: a VOLTA LMDB is a pickle by format, and a crafted one must not run code.
        keys = safe_loads(blob, self.path, "keys", encoding=_PY2_ENCODING)
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, (str, bytes)) for k in keys):
            raise DataError(self.path, "keys", "corrupt record: 'keys' must be a list of image ids (str or bytes)")
        self._set_ids(k.decode() if isinstance(k, bytes) else k for k in keys)
        if self._ids:
            first = self._read(self._ids[0])
            self.feat_dim = int(first.features.shape[1])
            self.num_classes = None if first.cls_prob is None else int(first.cls_prob.shape[1])
            self.format = self._variant

    _variant = "volta"

    def _read(self, image_id: str) -> RegionRecord:
        blob = self._raw(image_id.encode())
        if blob is None:
            raise DataError(self.path, image_id, "missing image id: listed in 'keys' but has no record")
        item = safe_loads(blob, self.path, image_id, encoding=_PY2_ENCODING)
        if not isinstance(item, dict):
            raise DataError(self.path, image_id, f"corrupt record: expected a dict, got {type(item).__name__}")
        try:
            h = float(item["image_h"] if "image_h" in item else item["img_h"])
            w = float(item["image_w"] if "image_w" in item else item["img_w"])
            feats, boxes, probs = item["features"], item["boxes"], item.get("cls_prob")
            num = item.get("num_boxes")
            if isinstance(feats, (str, bytes)):
                self._variant = "volta-b64"
                flat = _decode_b64_array(feats)
                if num is not None:
                    n = int(num)
                elif self.feat_dim:
                    n = len(flat) // self.feat_dim
                else:
                    raise DataError(self.path, image_id, "corrupt record: base64 features without num_boxes")
                if n == 0 or len(flat) % n:
                    if len(flat):
                        raise DataError(self.path, image_id, f"corrupt record: {len(flat)} floats for {n} boxes")
                    feats = flat.reshape(0, self.feat_dim or 0)
                else:
                    feats = flat.reshape(n, -1)
                raw_boxes = base64.b64decode(boxes.encode() if isinstance(boxes, str) else boxes, validate=True)
                # ViLBERT writers used float32 or float64 boxes; the byte count tells which.
                bdtype = np.float64 if n and len(raw_boxes) == n * 4 * 8 else np.float32
                boxes = np.frombuffer(raw_boxes, dtype=bdtype)
                if probs is not None:
                    probs = _decode_b64_array(probs)
                    probs = probs.reshape(n, -1) if n else probs.reshape(0, self.num_classes or 0)
            feats = np.asarray(feats)
            boxes = np.asarray(boxes, dtype=np.float32)
            if boxes.ndim == 1 or boxes.size == 0:  # flat (base64) arrays; a 2-d array keeps its shape
                boxes = boxes.reshape(-1, 4)
            if num is not None and int(num) != feats.shape[0]:
                raise DataError(
                    self.path, image_id, f"wrong dimensions: num_boxes={num} but features have shape {feats.shape}"
                )
        except DataError:
            raise
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise DataError(self.path, image_id, f"corrupt record: {type(exc).__name__}: {exc}") from exc
        return RegionRecord(
            image_id,
            feats.astype(np.float32, copy=False),
            boxes,
            w,
            h,
            None if probs is None else np.asarray(probs, dtype=np.float32),
        )


class FastStore(_LMDBMixin, FeatureStore):
    """Our store: LMDB of packed float16 records, no pickle on the read path."""

    format = "fast"

    def __init__(self, path: PathLike) -> None:
        super().__init__(path)
        meta = self._raw(_FAST_META_KEY)
        if meta is None:
            raise DataError(self.path, None, "not a switchbert fast store: no metadata entry")
        try:
            self.meta = json.loads(meta)
            if not isinstance(self.meta, dict):
                raise ValueError(f"a {type(self.meta).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(self.path, _FAST_META_KEY.decode(), f"corrupt record: metadata is not JSON ({exc})") from exc
        ids_blob = self._raw(_FAST_IDS_KEY) or b""
        self._set_ids(StringTable.from_joined(ids_blob))
        self.feat_dim = self.meta.get("feat_dim")
        self.num_classes = self.meta.get("num_classes")

    def _read(self, image_id: str) -> RegionRecord:
        return self._read_record(image_id, widen=True)

    def _read_native(self, image_id: str, cls_prob: bool = True) -> RegionRecord:
        return self._read_record(image_id, widen=False, cls_prob=cls_prob)

    def _read_record(self, image_id: str, widen: bool, cls_prob: bool = True) -> RegionRecord:
        with self._env().begin(buffers=True) as txn:
            buf = txn.get(image_id.encode())
            if buf is None:
                raise DataError(self.path, image_id, "missing image id: listed but has no record")
            return self._decode(image_id, buf, widen, cls_prob)

    @contextmanager
    def pages(self) -> Iterator[Callable[..., RegionRecord]]:
        # One transaction for the whole batch; features and cls_prob are views of the LMDB pages (boxes,
        # 16 bytes a region, are copied so that nothing small outlives the block by accident).
        with self._env().begin(buffers=True) as txn:
            def read(image_id: object, cls_prob: bool = True) -> RegionRecord:
                iid = str(image_id)
                buf = txn.get(iid.encode())  # the id index is asked only to word the error (~10 us a read)
                if buf is None or iid not in self:
                    why = "listed but has no record" if iid in self else "not in the feature store"
                    raise DataError(self.path, iid, f"missing image id: {why}")
                n, f, c, w, h = self._check_header(iid, buf)
                off = _FAST_HEADER.size
                boxes = np.frombuffer(buf, np.float32, n * 4, off).reshape(n, 4).copy()
                feats = np.frombuffer(buf, np.float16, n * f, off + n * 16).reshape(n, f)
                probs = (np.frombuffer(buf, np.float16, n * c, off + n * 16 + n * f * 2).reshape(n, c)
                         if c and cls_prob else None)
                record = RegionRecord(iid, feats, boxes, float(w), float(h), probs)
                return validate_record(record, self.path, self.feat_dim, self.num_classes, cls_prob=cls_prob)

            yield read

    def _check_header(self, image_id: str, buf) -> tuple[int, int, int, int, int]:
        """(n, F, C, w, h) of a record, the boxes at ``_FAST_HEADER.size``; DataError if its size does not match."""
        size = len(buf)
        if size < _FAST_HEADER.size:
            raise DataError(self.path, image_id, f"corrupt record: {size} bytes, shorter than the header")
        magic, n, f, c, w, h = _FAST_HEADER.unpack_from(buf, 0)
        expect = _FAST_HEADER.size + n * 16 + n * f * 2 + n * c * 2
        if magic != _FAST_MAGIC or size != expect:
            raise DataError(self.path, image_id, f"corrupt record: {size} bytes, header implies {expect}")
        return n, f, c, w, h

    def _decode(self, image_id: str, buf, widen: bool = True, cls_prob: bool = True) -> RegionRecord:
        n, f, c, w, h = self._check_header(image_id, buf)
        off = _FAST_HEADER.size
        # np.frombuffer views the LMDB page; astype copies out before the transaction ends.
        boxes = np.frombuffer(buf, np.float32, n * 4, off).reshape(n, 4).copy()
        off += n * 16
        # features and cls_prob are adjacent float16 blocks: widen (or copy) both in one call
        if widen:
            wide = _widen_fp16(buf, n * (f + c), off)
        else:  # copied out of the LMDB page, which is only valid inside the transaction
            wide = np.frombuffer(buf, np.float16, n * (f + (c if cls_prob else 0)), off).copy()
            if not cls_prob:
                return RegionRecord(image_id, wide.reshape(n, f), boxes, float(w), float(h), None)
        feats = wide[: n * f].reshape(n, f)
        probs = wide[n * f:].reshape(n, c) if c else None
        return RegionRecord(image_id, feats, boxes, float(w), float(h), probs)


_torch_warned_once = False


def _widen_fp16(buf, count: int, offset: int) -> np.ndarray:
    """float16 bytes -> a new float32 array, widened by torch: an order of magnitude faster than numpy's
    ``astype`` (BENCHMARKS.md, "Data layer")."""
    global _torch_warned_once
    view = np.frombuffer(buf, np.float16, count, offset)
    if not _torch_warned_once:
        # torch warns, once per process, that the read-only LMDB buffer is not writable; we only read
        # it and keep a converted copy, so silence that one warning without a filter on every call.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = torch.from_numpy(view).float().numpy()
        _torch_warned_once = True
        return out
    return torch.from_numpy(view).float().numpy()


def encode_fast_record(record: RegionRecord) -> bytes:
    """Packs a record for :class:`FastStore` (features and cls_prob in float16)."""
    n, f = record.features.shape
    c = 0 if record.cls_prob is None else record.cls_prob.shape[1]
    if n >= 2**16:
        raise DataError(None, record.image_id, f"too many regions to store: {n}")
    parts = [
        _FAST_HEADER.pack(_FAST_MAGIC, n, f, c, float(record.image_w), float(record.image_h)),
        np.ascontiguousarray(record.boxes_px, dtype=np.float32).tobytes(),
        np.ascontiguousarray(record.features, dtype=np.float16).tobytes(),
    ]
    if c:
        parts.append(np.ascontiguousarray(record.cls_prob, dtype=np.float16).tobytes())
    return b"".join(parts)


# ----------------------------------------------------------------------------------------------- H5
class H5Store(FeatureStore):
    """bottom-up-attention HDF5: one group per image id."""

    format = "h5"
    _handle_file = None
    _handle_pid: Optional[int] = None

    def __init__(self, path: PathLike) -> None:
        super().__init__(path)
        f = self._file()
        self._set_ids(list(f.keys()))
        if self._ids:
            first = self._read(self._ids[0])
            self.feat_dim = int(first.features.shape[1])
            self.num_classes = None if first.cls_prob is None else int(first.cls_prob.shape[1])
        self.close()  # reopen lazily, per process (h5py handles do not survive fork)

    def _file(self):
        import h5py

        if self._handle_file is None or self._handle_pid != os.getpid():
            try:
                self._handle_file = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(self.path, None, f"cannot open as HDF5: {exc}") from exc
            self._handle_pid = os.getpid()
        return self._handle_file

    def _read(self, image_id: str) -> RegionRecord:
        try:
            g = self._file()[image_id]

            def scalar(*names: str) -> float:
                for name in names:
                    if name in g:
                        return float(np.asarray(g[name]).reshape(-1)[0])
                    if name in g.attrs:
                        return float(np.asarray(g.attrs[name]).reshape(-1)[0])
                raise KeyError(names[0])

            feats = np.asarray(g["features"], dtype=np.float32)
            boxes = np.asarray(g["boxes"], dtype=np.float32)
            probs = np.asarray(g["cls_prob"], dtype=np.float32) if "cls_prob" in g else None
            w, h = scalar("img_w", "image_w"), scalar("img_h", "image_h")
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise DataError(self.path, image_id, f"corrupt record: {type(exc).__name__}: {exc}") from exc
        if boxes.ndim == 2 and boxes.shape[1] == 4 or boxes.size == 0:
            boxes = boxes.reshape(-1, 4)
        return RegionRecord(image_id, feats, boxes, w, h, probs)

    def close(self) -> None:
        if self._handle_file is not None and self._handle_pid == os.getpid():
            self._handle_file.close()
        self._handle_file = None


# -------------------------------------------------------------------------------------- open / write
def detect_format(path: PathLike) -> str:
    """'fast', 'volta' (either array variant) or 'h5', from the files at ``path``."""
    p = Path(path)
    if p.is_dir():
        if not (p / "data.mdb").exists():
            raise DataError(p, None, "unknown feature store: a directory without data.mdb")
        with _lmdb_env(p).begin() as txn:
            if txn.get(_FAST_META_KEY) is not None:
                return "fast"
            if txn.get(b"keys") is not None:
                return "volta"
        raise DataError(p, None, "unknown LMDB layout: neither a switchbert fast store nor a VOLTA store ('keys')")
    if p.is_file():
        with open(p, "rb") as fh:
            if fh.read(8) == b"\x89HDF\r\n\x1a\n":
                return "h5"
        raise DataError(p, None, "unknown feature store: not an HDF5 file")
    raise DataError(p, None, "feature store not found")


def open_feature_store(path: PathLike) -> FeatureStore:
    """Opens any supported store, detecting its format."""
    fmt = detect_format(path)
    if fmt == "fast":
        return FastStore(path)
    if fmt == "volta":
        return VoltaLMDBStore(path)
    return H5Store(path)


class _LMDBWriter:
    """Batched LMDB writes that grow the map when it fills (LMDB needs a size up front)."""

    def __init__(self, path: PathLike, map_size: int = 1 << 30, batch: int = 512) -> None:
        import lmdb

        Path(path).mkdir(parents=True, exist_ok=True)
        _close_lmdb_env(Path(path))  # py-lmdb allows one environment per path and process
        self.env = lmdb.open(str(path), map_size=map_size, subdir=True, readahead=False, meminit=False)
        self.pending: list[tuple[bytes, bytes]] = []
        self.batch = batch

    def put(self, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        import lmdb

        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        txn.put(k, v)
                self.pending = []
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def close(self) -> None:
        self.flush()
        self.env.sync()
        self.env.close()


def write_store(path: PathLike, records: Iterable[RegionRecord], fmt: str = "fast",
                extra_meta: Optional[dict] = None) -> int:
    """Writes ``records`` to a new store at ``path`` in format ``fmt``; returns the count.

    ``fast``, ``volta`` and ``volta-b64`` write an LMDB directory; ``h5`` writes one HDF5 file.
    ``extra_meta`` (JSON values: what made the features, e.g. the extractor's weights and settings) goes
    under ``"extract"`` in a fast store's metadata, under the key ``__switchbert_extract__`` of a VOLTA
    LMDB (readers list ids from ``keys`` only) and in the root attribute ``switchbert_extract`` of an
    h5 file. Records carrying detector labels (``object_ids``, ``object_conf``, ``attr_ids``,
    ``attr_conf``) keep them in h5 as ``objects_id``, ``objects_conf``, ``attrs_id``, ``attrs_conf``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown feature store format {fmt!r}; choose one of {FORMATS}")
    p = Path(path)
    if fmt == "h5" and p.is_dir():
        raise DataError(p, None, "is a directory; the h5 format writes one file (give a file name)")
    if fmt != "h5":
        if p.exists() and not p.is_dir():
            raise DataError(p, None, f"exists and is not a directory; the {fmt} format writes an LMDB directory")
        # A new store, like h5py's "w": records of an old store at this path would otherwise stay
        # in the file next to the new ones.
        _close_lmdb_env(p)
        for name in ("data.mdb", "lock.mdb"):
            if (p / name).is_file():
                (p / name).unlink()
    if fmt == "h5":
        import h5py

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with h5py.File(path, "w") as f:
            if extra_meta is not None:
                f.attrs["switchbert_extract"] = json.dumps(extra_meta)
            for r in records:
                g = f.create_group(r.image_id)
                g.create_dataset("features", data=np.asarray(r.features, dtype=np.float32))
                g.create_dataset("boxes", data=np.asarray(r.boxes_px, dtype=np.float32))
                g.create_dataset("img_w", data=r.image_w)
                g.create_dataset("img_h", data=r.image_h)
                if r.cls_prob is not None:
                    g.create_dataset("cls_prob", data=np.asarray(r.cls_prob, dtype=np.float32))
                for name, h5_name in _H5_LABELS:
                    value = getattr(r, name, None)
                    if value is not None:
                        g.create_dataset(h5_name, data=np.asarray(value))
                count += 1
        return count

    writer = _LMDBWriter(path)
    ids: list[str] = []
    feat_dim = num_classes = None
    for r in records:
        ids.append(r.image_id)
        if fmt == "fast":
            writer.put(r.image_id.encode(), encode_fast_record(r))
            feat_dim = int(r.features.shape[1])
            num_classes = None if r.cls_prob is None else int(r.cls_prob.shape[1])
        else:
            writer.put(r.image_id.encode(), pickle.dumps(_volta_item(r, b64=fmt == "volta-b64"), protocol=4))
    if fmt == "fast":
        meta = {"format": "switchbert-fast", "version": 1, "count": len(ids), "feat_dim": feat_dim,
                "num_classes": num_classes, "dtype": "float16"}
        if extra_meta is not None:
            meta["extract"] = extra_meta
        writer.put(_FAST_META_KEY, json.dumps(meta).encode())
        writer.put(_FAST_IDS_KEY, "\n".join(ids).encode())
    else:
        writer.put(b"keys", pickle.dumps([i.encode() for i in ids], protocol=4))
        if extra_meta is not None:
            writer.put(_VOLTA_EXTRACT_KEY, json.dumps(extra_meta).encode())
    writer.close()
    return len(ids)


def _volta_item(r: RegionRecord, b64: bool) -> dict:
    def arr(x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return base64.b64encode(x.tobytes()).decode() if b64 else x

    item = {"image_id": r.image_id, "image_h": r.image_h, "image_w": r.image_w,
            "num_boxes": r.num_regions, "boxes": arr(r.boxes_px), "features": arr(r.features)}
    if r.cls_prob is not None:
        item["cls_prob"] = arr(r.cls_prob)
    return item


def convert_store(src: PathLike, dst: PathLike, fmt: str = "fast", skip_bad: bool = False) -> tuple[int, BadItemPolicy]:
    """Copies every record of ``src`` (any format) into a new ``fmt`` store at ``dst``.

    Returns:
        (records written, the policy with its skip counts).
    """
    if Path(dst).exists() and os.path.realpath(src) == os.path.realpath(dst):
        raise DataError(dst, None, "is the source store; convert into a new path")
    store = open_feature_store(src)
    policy = BadItemPolicy(skip_bad)

    def good() -> Iterator[RegionRecord]:
        for iid in store.ids():
            try:
                yield store.get(iid)
            except DataError as err:
                policy.handle(err)

    n = write_store(dst, good(), fmt)
    store.close()
    return n, policy


def inspect_store(path: PathLike, sample_size: int = 1000, sample_id: Optional[str] = None) -> dict:
    """Count, dimensions, region statistics over up to ``sample_size`` images, and one sample record."""
    store = open_feature_store(path)
    ids = store.ids()
    step = max(1, len(ids) // max(sample_size, 1))
    counts, norms = [], []
    for iid in ids[::step][:sample_size]:
        r = store.get(iid)
        counts.append(r.num_regions)
        if r.num_regions:
            norms.append(float(np.linalg.norm(r.features, axis=1).mean()))
    info: dict = {
        "path": str(store.path),
        "format": store.format,
        "count": len(store),
        "feat_dim": store.feat_dim,
        "num_classes": store.num_classes,
        "regions": {
            "images_sampled": len(counts),
            "min": int(min(counts)) if counts else 0,
            "mean": float(np.mean(counts)) if counts else 0.0,
            "max": int(max(counts)) if counts else 0,
            "images_with_zero": int(sum(c == 0 for c in counts)),
            "images_over_36": int(sum(c > 36 for c in counts)),
            "mean_feature_norm": float(np.mean(norms)) if norms else 0.0,
        },
    }
    sid = sample_id if sample_id is not None else (ids[0] if ids else None)
    if sid is not None:
        r = store.get(sid)
        info["sample"] = {
            "image_id": r.image_id,
            "image_w": r.image_w,
            "image_h": r.image_h,
            "num_regions": r.num_regions,
            "first_boxes_px": np.round(r.boxes_px[:3].astype(np.float64), 1).tolist(),
            "features_mean": float(r.features.mean()) if r.num_regions else 0.0,
            "top_classes": (r.cls_prob[:3].argmax(axis=1).tolist() if r.cls_prob is not None and r.num_regions else None),
        }
    store.close()
    return info


def read_regions(store: FeatureStore, image_id: object, max_regions: int = 36, require_regions: bool = False,
                 cls_prob: bool = True):
    """Reads and processes one image's regions (docs/method.md §2): at most ``max_regions``, 5-d boxes.

    Features and class distributions keep the store's float type (float16 for the fast store): the
    model widens them on the device (``layers.embeddings.common.add_img_token``).

    Args:
        cls_prob: False = without the class distribution (``Regions.cls_prob`` None; tasks that do not
            use it).

    Raises:
        DataError: missing id, corrupt record, wrong dimensions, or (``require_regions``) zero regions.

    Returns:
        :class:`~switchbert.data.regions.Regions`.
    """
    return record_regions(store.get(image_id, native=True, cls_prob=cls_prob), store.path, max_regions,
                          require_regions)


def record_regions(r: RegionRecord, path: PathLike, max_regions: int = 36, require_regions: bool = False):
    """:func:`read_regions` for a record already read (e.g. from :meth:`FeatureStore.pages`; the
    arrays of the result view the record's where no conversion is needed)."""
    from switchbert.data.regions import process_regions

    if require_regions and r.num_regions == 0:
        raise DataError(path, r.image_id, "zero regions: this task needs at least one region")
    return process_regions(r.features, r.boxes_px, r.image_w, r.image_h, r.cls_prob, max_regions, keep_half=True)
