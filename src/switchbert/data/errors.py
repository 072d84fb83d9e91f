"""Errors for bad input, and the ``--skip-bad`` policy.

Every problem with a user's data raises :class:`DataError` (a ``ValueError``) whose message names the
file, the item and what is wrong, so the user can find and fix the record. When the user asked for
skipping, a :class:`BadItemPolicy` counts the skipped items and warns instead; it never substitutes a
different sample for a bad one.
"""

from __future__ import annotations

import json
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
    """Warned when a bad item is skipped under ``skip_bad=True``."""


@dataclass
class BadItemPolicy:
    """Raises on bad items, or (``skip_bad=True``) counts them and warns.

    Attributes:
        skip_bad: skip bad items instead of raising.
        counts: number of skipped items per reason kind (the ``DataError.reason`` up to its first ':').
    """

    skip_bad: bool = False
    counts: Counter = field(default_factory=Counter)

    def handle(self, error: DataError) -> None:
        """Raises ``error`` unless skipping; otherwise records and warns about it."""
        if not self.skip_bad:
            raise error
        self.counts[error.reason.split(":")[0]] += 1
        warnings.warn(f"skipped bad item: {error}", DataWarning, stacklevel=2)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no bad items skipped"
        parts = ", ".join(f"{n} x {kind}" for kind, n in self.counts.most_common())
        return f"skipped {self.skipped} bad items ({parts})"


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
