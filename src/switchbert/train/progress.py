"""The trainer's console: a progress bar on a terminal, else a line every ``train.log_every`` steps.

Without a terminal (SLURM, nohup; or ``train.progress=false``) rank 0 writes
``step 120/400  epoch 1  loss 2.3456  lr 4.2e-05  tau 0.812  310.5 samples/s  0:03:12 left`` on each
log step. With a bar, the same values go to the bar's postfix, and log records are routed through
``tqdm.write`` so they never land on the bar. Throughput is measured over the window since the last log
step; the time left from the mean step time of this run (not of the resumed-from one).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import time
from typing import ContextManager, Optional

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)


class TrainProgress:
    """The bar or the console lines of one run.

    Args:
        total: the stage's optimizer steps.
        initial: the step the run starts at (non-zero on resume).
        desc: the bar's label.
        show: draw a bar (rank 0 on a terminal with ``train.progress``).
        print_lines: write a line on each log step instead (rank 0 without a bar).
    """

    def __init__(self, total: int, initial: int, desc: str, show: bool, print_lines: bool) -> None:
        self.total, self.show, self.print_lines = total, show, print_lines
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not show)
        self.run_start, self.run_start_step = time.perf_counter(), initial
        self.window_start, self.window_samples = time.perf_counter(), 0

    def redirect(self) -> ContextManager:
        """For the whole loop: with a bar on the terminal, log records go through ``tqdm.write``."""
        return logging_redirect_tqdm() if self.show else contextlib.nullcontext()

    def count(self, samples: int) -> None:
        """One optimizer step of ``samples`` items was taken."""
        self.window_samples += samples

    def samples_per_s(self) -> float:
        """Throughput since the last log step (or the start of the run)."""
        return self.window_samples / max(time.perf_counter() - self.window_start, 1e-9)

    def report(self, step: int, epoch: int, loss: float, lr: float, tau: Optional[float], samples_per_s: float) -> None:
        """A log step: the bar's postfix or a console line; then a new throughput window starts.

        ``epoch`` counts from 0 (as in metrics.jsonl); the console shows it from 1, as the end-of-epoch
        lines do. ``tau`` is None for a model without switches, and is then not shown.
        """
        temperature = {} if tau is None else {"tau": f"{tau:.3f}"}
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=format_lr(lr), **temperature,
                             samples_s=f"{samples_per_s:.1f}")
        if self.print_lines:
            per_step = (time.perf_counter() - self.run_start) / max(1, step - self.run_start_step)
            shown_tau = "" if tau is None else f"  tau {tau:.3f}"
            log.info("step %d/%d  epoch %d  loss %.4f  lr %s%s  %.1f samples/s  %s left",
                     step, self.total, epoch + 1, loss, format_lr(lr), shown_tau, samples_per_s,
                     duration(per_step * (self.total - step)))
        self.window_start, self.window_samples = time.perf_counter(), 0

    def step_done(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def format_lr(lr: float) -> str:
    """A learning rate as the console writes it everywhere, in one notation: ``6e-04``, ``1.5e-05``, ``0``."""
    if lr == 0:
        return "0"
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def duration(seconds: float) -> str:
    """``"1:02:03"`` (h:mm:ss); ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(datetime.timedelta(seconds=int(round(seconds))))
