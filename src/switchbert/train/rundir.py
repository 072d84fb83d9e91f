"""The run directory's guards: one run at a time (``RunLock``), and what ``--resume`` may change.

``RunLock`` holds ``fcntl.flock`` on ``OUTPUT_DIR/.lock`` for the whole run and writes the holder's
pid, host and start time into it, so a second run into the same directory stops with a message naming
the first. The kernel drops the lock when the process dies (kill -9 included), so a stale lock file
never blocks a later run. flock is advisory and per host: on a network file system shared by several
hosts it may not exclude a run on another host (NFS maps it to POSIX locks; some file systems ignore it).

``resume_differences`` compares the experiment a checkpoint was trained with and the one given now:
``RESUME_MUTABLE`` lists what may change (docs/training.md, "Guarantees"); anything else is refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

LOCK_NAME = ".lock"

RESUME_MUTABLE: tuple[str, ...] = (
    "output_dir", "name",
    "model.init_from", "model.bert_dir",  # the weights come from last/ on resume
    "data.root", "data.num_workers", "data.skip_bad",
    "data.cc_train", "data.cc_valid", "data.features",  # moved data: the same files at a new place
    "data.vqa_train_questions", "data.vqa_train_annotations", "data.vqa_val_questions",
    "data.vqa_val_annotations", "data.vqa_test_questions", "data.flickr_train", "data.flickr_val",
    "data.flickr_test", "data.refcoco_refs", "data.refcoco_instances",
    "train.epochs", "train.max_steps",  # the LR and tau schedules are stretched to the new length
    "train.stop_after", "train.log_every", "train.checkpoint_every", "train.progress", "train.tensorboard",
    "train.device", "train.compile",
    "eval.batch_size", "eval.splits",
)
"""Dotted config keys a resumed run may change; they take effect from the resumed step on."""


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


class RunLock:
    """An exclusive lock on a run directory (see the module docstring).

    Args:
        directory: the run directory (created if missing).
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise RunLockedError(f"output_dir {self.path.parent} is in use by another run ({holder}); wait for it "
                                 f"to finish or choose another output_dir") from None
        os.ftruncate(fd, 0)
        info = f"pid {os.getpid()} on host {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.pwrite(fd, (info + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "overrides":  # model.overrides is compared as one value
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(saved: dict[str, Any], now: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The keys whose values differ between two ``ExperimentConfig.to_dict()``: (allowed, refused).

    Each entry reads ``key: <saved> -> <now>``.
    """
    a, b = _flatten(saved), _flatten(now)
    allowed, refused = [], []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            line = f"{key}: {a.get(key)!r} -> {b.get(key)!r}"
            (allowed if key in RESUME_MUTABLE else refused).append(line)
    return allowed, refused
