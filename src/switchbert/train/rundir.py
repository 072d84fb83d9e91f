"""The run directory's guards: one run at a time (``RunLock``), and what ``--resume`` may change.

``RunLock`` holds a ``dirlock.DirectoryLock`` on ``OUTPUT_DIR/.lock`` for the whole run, so a second
run into the same directory stops with a message naming the first (its pid, host and start time); a
stale lock file never blocks a later run, and the lock is advisory and per host (``switchbert.dirlock``).

``resume_differences`` compares the experiment a checkpoint was trained with and the one given now:
``RESUME_MUTABLE`` lists what may change (docs/training.md, "Guarantees"); anything else is refused.
"""

from __future__ import annotations

from typing import Any

from switchbert.dirlock import LOCK_NAME, DirectoryLock, DirectoryLockedError

__all__ = ["LOCK_NAME", "RESUME_MUTABLE", "RunLock", "RunLockedError", "resume_differences"]

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


class RunLockedError(DirectoryLockedError):
    """Another process holds the run directory."""


class RunLock(DirectoryLock):
    """An exclusive lock on a run directory (see the module docstring).

    Args:
        directory: the run directory (created if missing).
    """

    MESSAGE = ("output_dir {directory} is in use by another run ({holder}); wait for it to finish or choose "
               "another output_dir")
    ERROR = RunLockedError

    def acquire(self) -> "RunLock":
        self._created = not self.path.parent.exists()
        super().acquire()
        return self

    def release(self) -> None:
        """Releases the lock; a directory this lock created and that still holds nothing but the lock
        file (a run refused before its first write) is removed, so a refusal leaves no run directory."""
        directory = self.path.parent
        empty = (getattr(self, "_created", False) and self._fd is not None
                 and {p.name for p in directory.iterdir()} <= {LOCK_NAME})
        if empty:
            self.path.unlink(missing_ok=True)  # while still holding it: no other run can be inside
        super().release()
        if empty:
            try:
                directory.rmdir()
            except OSError:  # another process wrote into it meanwhile: keep it
                pass


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
