"""Runs a benchmark against two revisions of the library in one go: ``before`` (a git revision) and the
working tree, each in its own Python process, so their numbers can be printed side by side.

The ``before`` revision's ``src/`` is extracted with ``git archive`` into a temporary directory; the
benchmark's child process puts that directory (or this tree's ``src/``) first on ``sys.path``. The
measuring code must therefore use only what both revisions have.

Used by bench_data_pipeline.py, bench_data_scale.py and bench_retrieval_eval.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BEFORE_DEFAULT = "2e32e28"
"""main when the input-pipeline work began (float32 features, dense MRC targets, list indices)."""


def extract_src(rev: str, into: Path) -> Path:
    """``rev``'s ``src/`` under ``into``; returns the ``src`` directory."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "src.tar"
    with open(archive, "wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_child(script: str, src: Path, args: list[str], env_extra: dict | None = None) -> dict[str, Any]:
    """Runs ``script --child --src SRC ARGS`` and returns the JSON it writes."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = Path(fh.name)
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [sys.executable, str(Path(__file__).with_name(script)), "--child", "--src", str(src), "--json", str(out),
           *args]
    subprocess.run(cmd, check=True, env=env)
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def child_setup(src: str) -> None:
    """In a child: import the library from ``src`` (first on sys.path)."""
    sys.path.insert(0, src)


def load() -> str:
    """`uptime`'s load averages, for the record (the machine is shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ratio(after: float, before: float) -> str:
    return f"{after / before:.2f}x" if before else "-"
