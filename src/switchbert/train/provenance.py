"""Where a run came from: library versions, the source commit, the command line and the data files.

``provenance(config)`` is written beside each checkpoint's weights (``provenance.json``) and at the top of
the run directory, and its short form goes into the model card, so a number in a results table can be
traced to the code and the data that produced it.

A data file's fingerprint is its size, its modification time and a SHA-256 of its first and last MiB (a
feature store is tens of GB: hashing it whole at every checkpoint would cost minutes). It tells apart
two different files and notices a file rewritten in place; it does not prove two files identical.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

CHUNK = 1 << 20  # bytes hashed at each end of a file


@functools.lru_cache(maxsize=256)
def _file_fingerprint(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(CHUNK))
        if size > 2 * CHUNK:
            f.seek(size - CHUNK)
            h.update(f.read(CHUNK))
    return h.hexdigest()[:16]


def fingerprint(path: str | Path) -> Optional[dict[str, Any]]:
    """``{"path", "bytes", "mtime", "sha256_ends"}`` of a file, or of every file of a directory (an LMDB
    store: ``data.mdb``), None when it does not exist."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "lock.mdb")
    elif path.is_file():
        files = [path]
    else:
        return None
    h, size, mtime = hashlib.sha256(), 0, 0.0
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:".encode())
        h.update(_file_fingerprint(str(f), st.st_size, st.st_mtime_ns).encode())
        size += st.st_size
        mtime = max(mtime, st.st_mtime)
    return {"path": str(path), "bytes": size, "mtime": round(mtime, 3), "sha256_ends": h.hexdigest()[:16]}


@functools.lru_cache(maxsize=1)
def source_commit() -> Optional[str]:
    """The git commit of the source tree switchbert is imported from (an editable install from a checkout),
    with ``+dirty`` when tracked files differ from it; None for an installed wheel."""
    src = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def versions() -> dict[str, str]:
    import numpy
    import torch

    import switchbert

    return {"switchbert": switchbert.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def provenance(config: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The run's provenance; ``config`` is the resolved experiment (``ExperimentConfig.to_dict()``)."""
    data: dict[str, Any] = {}
    d = (config or {}).get("data", {})
    root = Path(str(d.get("root", ".")))
    for key, value in d.items():
        if key == "root" or not isinstance(value, str) or not value:
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else root / path
        if path.exists():
            data[key] = fingerprint(path)
    return {"versions": versions(), "commit": source_commit(),
            "command": " ".join(shlex.quote(a) for a in sys.argv), "cwd": os.getcwd(),
            "host": platform.node(), "data": data}


def card_lines(p: dict[str, Any]) -> list[str]:
    """The model card's short form of :func:`provenance`."""
    v = p["versions"]
    lines = [f"software: switchbert {v['switchbert']}, torch {v['torch']}, python {v['python']}"
             + (f", commit {p['commit']}" if p.get("commit") else "")]
    if p.get("command"):
        lines.append(f"command: `{p['command']}`")
    if p.get("data"):
        lines.append("data fingerprints (size, SHA-256 of each file's ends; provenance.json has the paths): "
                     + ", ".join(f"{k} {f['sha256_ends']}" for k, f in p["data"].items()))
    return lines
