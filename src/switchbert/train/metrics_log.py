"""Where training metrics go: ``OUTPUT_DIR/metrics.jsonl`` (one JSON object per line) and TensorBoard
when it is installed. Rank 0 only.

A line is ``{"split": "train" | "val", "step": int, "epoch": int, <name>: float, ...}``. Train lines
also carry ``lr``, ``tau``, ``samples_per_s`` and, for switching models, the mean route
probabilities per layer (``switchbert.analysis.routes.route_probability_log``).

The file always belongs to one run's history. On ``--resume`` the lines after the checkpoint's step
are dropped (the resumed run writes them again; from a checkpoint written before its epoch's
validation, that validation's lines too), and so is a torn last line a kill left (with a
warning); a bad line elsewhere is an error naming the file and line. A fresh start never appends to an
older file (a run killed before its first checkpoint): that one is renamed ``metrics.jsonl.1`` (``.2``
if taken, ...) with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

from switchbert.io import atomic_write_text, parse_jsonl, read_jsonl

log = logging.getLogger(__name__)


class MetricsLog:
    """Appends metric records to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Args:
        output_dir: the run directory.
        enabled: False on ranks other than 0 (everything becomes a no-op).
        tensorboard: also write TensorBoard events (when ``torch.utils.tensorboard`` imports).
        truncate_after_step: on resume, drop records of steps after this one (they belong to the
            interrupted run's lost work and are about to be redone).
        redo_validation: on resume from a checkpoint written before its epoch's validation, also drop
            ``val`` records at ``truncate_after_step`` (a kill after logging them but before the next
            checkpoint): that validation runs again and logs them once.
        fresh: a new run: an existing ``metrics.jsonl`` is renamed aside instead of appended to.
    """

    def __init__(self, output_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 truncate_after_step: Optional[int] = None, fresh: bool = False,
                 redo_validation: bool = False) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and self.path.exists():
            n = 1
            while self.path.with_name(f"{self.path.name}.{n}").exists():
                n += 1
            aside = self.path.with_name(f"{self.path.name}.{n}")
            os.replace(self.path, aside)
            log.warning("%s: left by an earlier run in this directory (killed before its first checkpoint?); "
                        "renamed to %s so this run's log starts empty", self.path, aside.name)
        if truncate_after_step is not None and self.path.exists():
            redone = lambda r: r.get("step", 0) > truncate_after_step or (
                redo_validation and r.get("split") == "val" and r.get("step", 0) == truncate_after_step)
            kept = [json.dumps(r) for r in _records_for_resume(self.path) if not redone(r)]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional, but asked for: say so
                SummaryWriter = None
                log.warning("train.tensorboard is true but tensorboard is not installed (pip install tensorboard); "
                            "metrics go to %s only", self.path)
            if SummaryWriter is not None:
                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tensorboard"))

    def log(self, split: str, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"split": split, "step": step, "epoch": epoch, **{k: _finite(v) for k, v in values.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _records_for_resume(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``; a torn last line (a kill mid-write) is dropped with a warning."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            log.warning("%s:%d: dropped a torn last line (the run was killed while writing it): %.60r",
                        path, len(lines), lines[-1])
            lines.pop()
    return parse_jsonl("\n".join(lines), path)  # a bad line elsewhere: ValueError naming file and line


def _finite(v: Any) -> Any:
    # JSON has no NaN/inf; write them as strings so the file stays valid JSON.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(output_dir: Path, split: Optional[str] = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (optionally of one split), in order."""
    records = read_jsonl(Path(output_dir) / "metrics.jsonl")
    return [r for r in records if split is None or r.get("split") == split]
