"""Extraction over a folder that loses nothing: a journal, resume after kill -9, progress, bad images.

Regions go first into a journal next to the output (``<out>.partial``, an LMDB directory). Each batch
of images is one LMDB transaction: after a crash or ``kill -9`` an image is either wholly in the
journal or not at all (LMDB commits are atomic), never torn. A rerun with the same weights and
settings skips what the journal holds and computes the rest; different weights or settings are
refused with the differences named. When every image is done, the journal is written out as the
requested store (``fast``, ``volta`` or ``h5``, streaming, so memory stays flat) with the weights'
sha256 and every setting in its metadata, and the journal is removed.

Journal records are packed float32 arrays (no pickle): header ``SBX1``, n, F, C, width, height,
attribute flag; then boxes (n, 4), features (n, F), cls_prob (n, C), object ids and scores, attribute
ids and scores.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from switchbert.data.errors import DataError, PathLike, reason_kind
from switchbert.data.extract.api import DetectedRegions, RegionExtractor
from switchbert.data.extract.preprocess import BadImageError, load_image
from switchbert.data.features import write_store

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_HEADER = struct.Struct("<4sIIIffB")  # magic, n, F, C, image_w, image_h, has_attributes
_MAGIC = b"SBX1"
_SETTINGS_KEY = b"__settings__"
_SKIP_PREFIX = b"!skip:"


@dataclass
class ExtractSummary:
    """What a run did: images written, resumed (already in the journal), computed now, skipped."""

    total: int
    written: int
    resumed: int
    computed: int
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: list = field(default_factory=list)
    seconds: float = 0.0


def list_images(source: PathLike) -> list[tuple[str, Path]]:
    """(image id, path) for a folder (recursive, image suffixes, sorted), a list file, or one image.

    The id is the path relative to the folder without its suffix, sub-folders joined by ``__``
    (``sub/img_001.jpg`` -> ``sub__img_001``: an h5 store would read ``/`` as a group); a ``.txt`` file
    lists one path per line (ids = stems). Two files giving one id is an error naming both.
    """
    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [("__".join(p.relative_to(src).with_suffix("").parts), p) for p in files]
    elif src.is_file() and src.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in src.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        pairs = [(Path(ln).stem, (src.parent / ln) if not Path(ln).is_absolute() else Path(ln)) for ln in lines]
    elif src.is_file():
        pairs = [(src.stem, src)]
    else:
        raise DataError(src, None, "no such folder, list file or image")
    seen: dict[str, Path] = {}
    for iid, p in pairs:
        if iid in seen:
            raise DataError(p, iid, f"two images give the same image id (also {seen[iid]}); rename one")
        seen[iid] = p
    return pairs


def pack(r: DetectedRegions) -> bytes:
    n, f = r.features.shape
    c = 0 if r.cls_prob is None else r.cls_prob.shape[1]
    has_attr = r.attr_ids is not None
    parts = [_HEADER.pack(_MAGIC, n, f, c, float(r.image_w), float(r.image_h), int(has_attr)),
             np.ascontiguousarray(r.boxes_px, np.float32).tobytes(), np.ascontiguousarray(r.features, np.float32).tobytes()]
    if c:
        parts.append(np.ascontiguousarray(r.cls_prob, np.float32).tobytes())
    parts += [np.ascontiguousarray(r.object_ids, np.int32).tobytes(), np.ascontiguousarray(r.object_conf, np.float32).tobytes()]
    if has_attr:
        parts += [np.ascontiguousarray(r.attr_ids, np.int32).tobytes(), np.ascontiguousarray(r.attr_conf, np.float32).tobytes()]
    return b"".join(parts)


def unpack(image_id: str, buf: bytes, path: PathLike = "<journal>") -> DetectedRegions:
    if len(buf) < _HEADER.size:
        raise DataError(path, image_id, "corrupt journal record: shorter than its header")
    magic, n, f, c, w, h, has_attr = _HEADER.unpack_from(buf, 0)
    expect = _HEADER.size + 4 * (n * 4 + n * f + n * c + 2 * n + (2 * n if has_attr else 0))
    if magic != _MAGIC or len(buf) != expect:
        raise DataError(path, image_id, f"corrupt journal record: {len(buf)} bytes, header implies {expect}")
    off = _HEADER.size

    def take(count: int, dtype) -> np.ndarray:
        nonlocal off
        a = np.frombuffer(buf, dtype, count, off).copy()
        off += 4 * count
        return a

    boxes = take(n * 4, np.float32).reshape(n, 4)
    feats = take(n * f, np.float32).reshape(n, f)
    probs = take(n * c, np.float32).reshape(n, c) if c else None
    oid, oconf = take(n, np.int32).astype(np.int64), take(n, np.float32)
    aid = aconf = None
    if has_attr:
        aid, aconf = take(n, np.int32).astype(np.int64), take(n, np.float32)
    return DetectedRegions(image_id, feats, boxes, w, h, probs, oid, oconf, aid, aconf)


class Journal:
    """The ``<out>.partial`` LMDB: committed batches of records and skips, plus the run's settings."""

    def __init__(self, path: Path, settings: dict) -> None:
        import lmdb

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=1 << 30, subdir=True, readahead=False, meminit=False)
        with self.env.begin(write=True) as txn:
            old = txn.get(_SETTINGS_KEY)
            if old is None:
                txn.put(_SETTINGS_KEY, json.dumps(settings, sort_keys=True).encode())
            else:
                _check_same(json.loads(old), settings, path)

    def done(self) -> tuple[set[str], dict[str, str]]:
        """Image ids with a record, and skipped ids with their reasons."""
        records, skips = set(), {}
        with self.env.begin() as txn:
            for key, value in txn.cursor():
                if key == _SETTINGS_KEY:
                    continue
                if key.startswith(_SKIP_PREFIX):
                    skips[key[len(_SKIP_PREFIX):].decode()] = value.decode()
                else:
                    records.add(key.decode())
        return records, skips

    def commit(self, records: Sequence[DetectedRegions], skips: Sequence[tuple[str, str]]) -> None:
        """One transaction: all of this batch or (after a crash) none of it."""
        import lmdb

        items = [(r.image_id.encode(), pack(r)) for r in records]
        items += [(_SKIP_PREFIX + iid.encode(), reason.encode()) for iid, reason in skips]
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in items:
                        txn.put(k, v)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def read(self, ids: Sequence[str]) -> Iterator[DetectedRegions]:
        for iid in ids:
            with self.env.begin() as txn:
                buf = txn.get(iid.encode())
                rec = unpack(iid, bytes(buf), self.path)
            yield rec

    def close(self) -> None:
        self.env.close()


def _check_same(old: dict, new: dict, path: Path) -> None:
    diffs = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{section}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{section}: {a!r} -> {b!r}")
    if diffs:
        raise DataError(path, None, "a journal from another run (" + "; ".join(diffs[:6]) + "); resume with the "
                                    "same weights and settings, or delete the journal to start again")


class Progress:
    """One line every ``interval`` seconds: done/total, images/s over this run, time left."""

    def __init__(self, total: int, already: int, interval: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 stream=None) -> None:
        self.total, self.already, self.interval, self.clock = total, already, interval, clock
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = clock()
        self.done_now = 0
        self._printed_at = -1  # the count of the last printed line: a forced final line is not repeated

    def line(self, skipped: int) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done_now / elapsed
        left = self.total - self.already - self.done_now
        eta = _fmt_seconds(left / rate) if rate > 0 else "unknown"
        return (f"extract: {self.already + self.done_now}/{self.total} images ({skipped} skipped), "
                f"{rate:.2f} images/s, {eta} left")

    def update(self, n: int, skipped: int, force: bool = False) -> None:
        self.done_now += n
        now = self.clock()
        if (force and self._printed_at != self.done_now) or now - self.last >= self.interval:
            self.last, self._printed_at = now, self.done_now
            print(self.line(skipped), file=self.stream, flush=True)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def extraction_metadata(path: PathLike) -> Optional[dict]:
    """What made a store (weights file, sha256, layout, settings), if ``extract_folder`` wrote it; else None."""
    from switchbert.data.features import FastStore, H5Store, VoltaLMDBStore, open_feature_store

    store = open_feature_store(path)
    try:
        if isinstance(store, FastStore):
            return store.meta.get("extract")
        if isinstance(store, H5Store):
            raw = store._file().attrs.get("switchbert_extract")
        elif isinstance(store, VoltaLMDBStore):
            raw = store._raw(b"__switchbert_extract__")
        else:
            return None
        return None if raw is None else json.loads(bytes(raw) if not isinstance(raw, str) else raw)
    finally:
        store.close()


def journal_path(out: PathLike) -> Path:
    p = Path(out)
    return p.parent / (p.name + ".partial")


def extract_folder(images: PathLike, extractor: RegionExtractor, out: PathLike, fmt: str = "fast",
                   batch_size: int = 1, skip_bad: bool = True, progress: Optional[Progress] = None,
                   progress_interval: float = 10.0, stop_after: Optional[int] = None) -> ExtractSummary:
    """Extracts every image under ``images`` into a store at ``out`` (resumable; see the module docstring).

    Args:
        skip_bad: count and skip bad images (the summary lists them); False raises on the first.
        stop_after: stop after this many new images, leaving the journal (tests and benchmarks).

    Returns:
        An ExtractSummary; the store is written only when every image is done.
    """
    t0 = time.monotonic()
    pairs = list_images(images)
    # what must match for a resume: weights and settings (images may be added to the folder meanwhile)
    settings = {"format": {"format": fmt}, **extractor.metadata()}
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the journal
    journal = Journal(journal_path(out), settings)
    try:
        have, skipped = journal.done()
        ids = {iid for iid, _ in pairs}
        already = len(ids & have) + len(ids & set(skipped))
        todo = [(iid, p) for iid, p in pairs if iid not in have and iid not in skipped]
        if stop_after is not None:
            todo = todo[:stop_after]
        counts = Counter(reason_kind(r) for r in skipped.values())
        examples = [f"{iid}: {r}" for iid, r in list(skipped.items())[:5]]
        prog = progress or Progress(len(pairs), already, progress_interval)
        computed = 0
        for s in range(0, len(todo), batch_size):
            loaded, bad = [], []
            for iid, p in todo[s:s + batch_size]:
                try:
                    loaded.append(load_image(p, iid, extractor.config))
                except BadImageError as err:
                    if not skip_bad:
                        raise
                    bad.append((iid, str(err)))
                    counts[reason_kind(err.reason)] += 1
                    if len(examples) < 5:
                        examples.append(str(err))
            records = extractor.extract_loaded(loaded)
            journal.commit(records, bad)
            computed += len(records)
            prog.update(len(records) + len(bad), sum(counts.values()))
        have, skipped = journal.done()
        summary = ExtractSummary(len(pairs), 0, already, computed, counts, examples)
        if any(iid not in have and iid not in skipped for iid in ids):
            summary.seconds = time.monotonic() - t0
            return summary  # stopped early: the journal stays for the next run
        order = [iid for iid, _ in pairs if iid in have]
        meta = dict(settings)
        meta["skipped"] = {"count": len(skipped), "examples": examples}
        summary.written = write_store(out, journal.read(order), fmt, extra_meta=meta)
        prog.update(0, sum(counts.values()), force=True)
    finally:
        journal.close()
    shutil.rmtree(journal_path(out))
    summary.seconds = time.monotonic() - t0
    return summary
