"""Atomic file writes (a reader never sees a half-written file, and a crash leaves the old one), and
the one reader of JSON-lines files (metrics logs, results records)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Calls ``write(tmp_path)`` on a temporary file beside ``path``, fsyncs it, then renames it.

    Args:
        path: final location.
        write: writes the content to the path it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode any other new file gets (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # not Linux: set and restore (not thread-safe, hence the fallback only)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def parse_jsonl(text: str, source: str | Path) -> list[Any]:
    """The records of JSON-lines ``text`` (one JSON value a line; blank lines skipped).

    A bad line is a ``ValueError`` naming ``source`` and the line number.
    """
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{source}:{lineno}: not a JSON record ({e.msg})") from None
    return records


def read_jsonl(path: str | Path) -> list[Any]:
    """The records of a JSON-lines file (``parse_jsonl``)."""
    return parse_jsonl(Path(path).read_text(encoding="utf-8"), path)
