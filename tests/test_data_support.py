"""Helpers shared by the data-input tests (no tests here): pickles that run code, small stores."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import numpy as np

from switchbert.data.features import RegionRecord, _close_lmdb_env

SRC = str(Path(__file__).resolve().parents[1] / "src")


class _System:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _records(n=4, feat_dim=8, num_classes=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        xy = rng.uniform(0, 50, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (k, 2))], 1).astype(np.float32)
        probs = rng.dirichlet(np.ones(num_classes), k).astype(np.float32) if num_classes else None
        out.append(RegionRecord(str(10 + i), rng.random((k, feat_dim), dtype=np.float32), boxes, 100.0, 100.0, probs))
    return out


def _put(path: Path, key: bytes, value: bytes) -> None:
    _close_lmdb_env(path)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()
