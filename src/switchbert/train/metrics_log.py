"""Where training metrics go: ``OUTPUT_DIR/metrics.jsonl`` (one JSON object per line) and TensorBoard
when it is installed. Rank 0 only.

A line is ``{"split": "train" | "val", "step": int, "epoch": int, <name>: float, ...}``. Train lines
also carry ``lr``, ``tau``, ``samples_per_s`` and, for switching models, the mean route
probabilities per layer (``switchbert.analysis.routes.route_probability_log``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from switchbert.io import read_jsonl


class MetricsLog:
    """Appends metric records to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    Args:
        output_dir: the run directory.
        enabled: False on ranks other than 0 (everything becomes a no-op).
        tensorboard: also write TensorBoard events (when ``torch.utils.tensorboard`` imports).
        truncate_after_step: on resume, drop records of steps after this one (they belong to the
            interrupted run's lost work and are about to be redone).
    """

    def __init__(self, output_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 truncate_after_step: Optional[int] = None) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_after_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= truncate_after_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
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


def _finite(v: Any) -> Any:
    # JSON has no NaN/inf; write them as strings so the file stays valid JSON.
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(output_dir: Path, split: Optional[str] = None) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (optionally of one split), in order."""
    records = read_jsonl(Path(output_dir) / "metrics.jsonl")
    return [r for r in records if split is None or r.get("split") == split]
