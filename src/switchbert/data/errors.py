"""Errors for bad input, and the ``--skip-bad`` policy.

Every problem with a user's data raises :class:`DataError` (a ``ValueError``) whose message names the
file, the item and what is wrong, so the user can find and fix the record. When the user asked for
skipping, a :class:`BadItemPolicy` counts the skipped items instead, listing only the first few (the
loader of ``make_dataloader`` summarises the rest per pass); it never substitutes a different sample
for a bad one.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

PathLike = Union[str, Path]


class DataError(ValueError):
    """A problem with one item of a user's data.

    Attributes:
        path: the file (or store directory) the item came from.
        item: the item's identifier (image id, question id, line number, ...), or None for file-level
            problems.
        reason: what is wrong.
    """

    def __init__(self, path: Optional[PathLike], item: object, reason: str) -> None:
        self.path = str(path) if path is not None else "<memory>"
        self.item = item
        self.reason = reason
        where = self.path if item is None else f"{self.path}, item {item!r}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # DataLoader workers pickle exceptions back to the main process
        return (DataError, (self.path, self.item, self.reason))


class DataWarning(UserWarning):
    """Warned when a bad item is skipped under ``skip_bad=True``, and for the per-pass summaries."""


MAX_LISTED = 5
"""Skipped items listed one by one per policy; the rest are only counted (a store missing most
images would otherwise print one line per item, tens of thousands of lines)."""


def reason_kind(reason: str) -> str:
    """The kind of a :class:`DataError` reason, for counting: its words up to the first ':', digit,
    quote or bracket ("missing image id 123: not in ..." -> "missing image id")."""
    kind = re.split(r"[:\d'\"(\[]", reason, maxsplit=1)[0].strip()
    return kind or reason[:40]


def _in_worker() -> bool:
    try:
        from torch.utils.data import get_worker_info
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return get_worker_info() is not None


@dataclass
class BadItemPolicy:
    """Raises on bad items, or (``skip_bad=True``) counts them, listing only the first few.

    Counting happens wherever the item is read: in the main process, or in a DataLoader worker (whose
    copy of the policy the main process never sees). ``make_dataloader`` therefore carries each
    batch's new skips back with the batch (:meth:`drain` in the worker, :meth:`absorb` in the main
    process) and prints one summary per pass over the data.

    Attributes:
        skip_bad: skip bad items instead of raising.
        counts: skipped items per reason kind (:func:`reason_kind`), over this policy's life.
        max_listed: items warned about one by one; later ones are only counted.
    """

    skip_bad: bool = False
    counts: Counter = field(default_factory=Counter)
    max_listed: int = MAX_LISTED
    listed: int = 0
    sources: list = field(default_factory=list)  # the files bad items came from, first seen first
    passes: int = 0  # passes summarised by make_dataloader's loader
    build_reported: bool = False
    _pending: Counter = field(default_factory=Counter, repr=False)
    _pending_examples: list = field(default_factory=list, repr=False)

    def handle(self, error: DataError) -> None:
        """Raises ``error`` unless skipping; otherwise counts it (and lists it if among the first few)."""
        if not self.skip_bad:
            raise error
        kind = reason_kind(error.reason)
        if error.path not in self.sources and len(self.sources) < 8:
            self.sources.append(error.path)
        self.counts[kind] += 1
        self._pending[kind] += 1
        if _in_worker():  # the main process lists it when the batch arrives (see absorb)
            if len(self._pending_examples) < self.max_listed:
                self._pending_examples.append(str(error))
        else:
            self._list(str(error))

    def _list(self, text: str) -> None:
        if self.listed >= self.max_listed:
            return
        self.listed += 1
        more = (f" (listing only the first {self.max_listed}; further bad items are counted, with a summary at "
                f"the end of the pass)" if self.listed == self.max_listed else "")
        warnings.warn(f"skipped bad item: {text}{more}", DataWarning, stacklevel=3)

    def drain(self) -> tuple[int, Counter, list]:
        """(process id, skips per kind, first examples) since the last drain; resets them."""
        out = (os.getpid(), self._pending, self._pending_examples)
        self._pending, self._pending_examples = Counter(), []
        return out

    def absorb(self, drained: tuple[int, Counter, list]) -> None:
        """Merges what a worker's :meth:`drain` returned (a no-op for this process's own drain)."""
        pid, counts, examples = drained
        if pid == os.getpid():
            return
        self.counts.update(counts)
        for text in examples:
            self._list(text)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no bad items skipped"
        return f"skipped {self.skipped} bad items ({format_counts(self.counts)})"


def format_counts(counts: Counter) -> str:
    """``"3,638 x missing image id, 2 x bad box"``, most frequent first."""
    return ", ".join(f"{n:,} x {kind}" for kind, n in counts.most_common())


def load_json(path: PathLike) -> object:
    """Reads a JSON file; a missing or malformed file is a :class:`DataError` naming it (and the line)."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise DataError(path, None, "file not found") from exc
    except IsADirectoryError as exc:
        raise DataError(path, None, "is a directory, expected a JSON file") from exc
    except UnicodeDecodeError as exc:
        raise DataError(path, None, f"not a UTF-8 text file (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise DataError(path, None, f"cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise DataError(path, None, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
