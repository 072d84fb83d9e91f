"""The demo's progress lines: each stage with the overall share done and an estimate of the time left.

Every stage has a weight, the seconds it is expected to take on the reference machine (one thread of
the 2-core CPU VM, one pipeline at a time; :func:`stage_weight`). The clock is injected, so a test
drives the estimate with made-up times.
"""

from __future__ import annotations

import heapq
import time
from typing import Any, Callable, Optional

from switchbert.demo.sizes import DemoSize


class Progress:
    """Prints each stage with the overall progress and an estimate of the time left.

    This run's seconds per unit of weight are measured on the stages that finished, as (their
    seconds + K x prior) / (their weight + K) with K = ``PRIOR_SECONDS``: until about K seconds' worth
    of stages have finished the rate stays near its prior (1 for one job, ``PARALLEL_COST`` for
    several), so a short first stage, whose one-off start-up costs are most of it, cannot swing the
    estimate (it once read 10 minutes at 9 s for a 7-minute run). The time left then replays the
    schedule: each running pipeline finishes its stages (minus what the running one has done), the
    pipelines not started yet go to whichever of the ``workers`` frees first, and the stages outside
    every pipeline (the analysis) run last, alone. The estimate is only as good as the weights'
    proportions, and it improves as stages finish. With parallel jobs the stages start and finish out
    of order; they are numbered in the order they start.

    Args:
        stages: (name, weight) per stage.
        echo: receives each printed line.
        workers: pipelines that run at once.
        pipelines: each pipeline's stage indices, in order; default: every stage its own pipeline.
        clock: seconds from an arbitrary origin (``time.perf_counter``; a test passes its own).
        label: the lines' prefix (``[demo 3/9 40%]``; the study passes ``study``).
    """

    PRIOR_SECONDS = 60.0
    # Two single-thread pipelines on the 2-core VM each ran 1.1-1.3x slower than one alone
    # (BENCHMARKS.md, "The demo").
    PARALLEL_COST = 1.2

    def __init__(self, stages: list[tuple[str, float]], echo: Callable[[str], Any] = print, workers: int = 1,
                 pipelines: Optional[list[list[int]]] = None,
                 clock: Callable[[], float] = time.perf_counter, label: str = "demo") -> None:
        self.stages, self.echo, self.workers, self.clock, self.label = stages, echo, workers, clock, label
        self.pipelines = pipelines if pipelines is not None else [[i] for i in range(len(stages))]
        in_pipeline = {i for p in self.pipelines for i in p}
        self.serial = [i for i in range(len(stages)) if i not in in_pipeline]
        self.total = sum(w for _, w in stages) or 1.0
        self.prior = 1.0 if workers == 1 else self.PARALLEL_COST
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.skipped: set[int] = set()  # finished by an earlier run (resume): no evidence of the rate
        self.started, self.next = 0, 0
        self.t0 = clock()

    @property
    def done_weight(self) -> float:
        return sum(self.stages[i][1] for i in self.ended)

    def rate(self) -> float:
        """Seconds per unit of weight, from the finished stages, shrunk towards the prior."""
        measured = [i for i in self.ended if i not in self.skipped]
        seconds = sum(self.ended[i] - self.began[i] for i in measured)
        weight = sum(self.stages[i][1] for i in measured)
        return (seconds + self.PRIOR_SECONDS * self.prior) / (weight + self.PRIOR_SECONDS)

    def seconds_left(self, now: float) -> float:
        """The estimate of the time left at ``now`` (seconds since the start)."""
        r = self.rate()

        def left(i: int) -> float:
            if i in self.ended:
                return 0.0
            return max(0.0, self.stages[i][1] * r - (now - self.began[i] if i in self.began else 0.0))

        free: list[float] = []  # when each busy worker frees, from now
        waiting: list[float] = []
        for stages in self.pipelines:
            if all(i in self.ended for i in stages):
                continue
            (free if any(i in self.began for i in stages) else waiting).append(sum(left(i) for i in stages))
        free += [0.0] * max(0, self.workers - len(free))
        heapq.heapify(free)
        for t in waiting:
            heapq.heappush(free, heapq.heappop(free) + t)
        return max(free, default=0.0) + sum(left(i) / self.prior for i in self.serial)

    def event(self, event: str, stage: int) -> None:
        """``start``, ``finish`` or ``skip`` (finished by an earlier run) of stage ``stage`` (an index into the
        stages)."""
        {"start": self.start, "finish": self.finish, "skip": self.skip}[event](stage)

    def start(self, stage: Optional[int] = None) -> str:
        """Announces a stage (default: the next one in order); returns the printed line."""
        stage = self.next if stage is None else stage
        self.next = stage + 1
        name, _ = self.stages[stage]
        elapsed = self.clock() - self.t0
        pct = 100.0 * self.done_weight / self.total
        if self.ended:
            eta = f"about {duration(self.seconds_left(elapsed))} left"
        else:
            eta = "estimating the time left"
        self.began[stage] = elapsed
        self.started += 1
        line = (f"[{self.label} {self.started}/{len(self.stages)} {pct:3.0f}%] {name} "
                f"(elapsed {duration(elapsed)}, {eta})")
        self.echo(line)
        return line

    def finish(self, stage: Optional[int] = None) -> None:
        stage = self.next - 1 if stage is None else stage
        self.ended[stage] = self.clock() - self.t0

    def skip(self, stage: int) -> None:
        """A started stage an earlier run had finished: done, but its ~0 seconds say nothing of the rate."""
        self.finish(stage)
        self.skipped.add(stage)


def duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``; under a minute ``"42s"``."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# What a stage costs, measured on one thread of the 2-core CPU VM with switchbert-mini at the default
# size: per trained sequence (a text and its regions, forward and backward), per evaluated one, and per
# stage (start-up, checkpoints). Other presets cost more per sequence in about the same proportions,
# which is all the estimate needs (BENCHMARKS.md, "The demo": predicted 4.6 / 29 / 132 / 15 s against
# 4 / 30 / 131 / 13 s measured).
TRAIN_SEQUENCE_SECONDS, EVAL_SEQUENCE_SECONDS, STAGE_SECONDS = 0.0025, 0.0006, 2.5

# The route analysis and the report at the default size (measured, BENCHMARKS.md "The demo").
ANALYSIS_SECONDS = 5.0


def stage_weight(stage: str, size: DemoSize, manifest: dict[str, Any], steps: Optional[int] = None) -> float:
    """Expected seconds of a stage on the reference machine (the progress estimate's weights):
    training, a validation per epoch, and the final evaluation. ``stage`` is a recipe name
    (pretrain, vqa, retrieval, refexp); ``steps`` replaces the size's step cap of the stage."""
    splits = manifest.get("stats", {}).get("splits", {})
    train = splits.get("train", int(0.8 * size.images))
    val, test = splits.get("val", size.images // 10), splits.get("test", size.images // 10)
    per_image = {"pretrain": 1, "vqa": size.questions_per_image, "retrieval": 5, "refexp": 2}[stage]
    batch = size.batch(stage)
    steps_per_epoch = max(1, train * per_image // batch)
    epochs = size.epochs(stage)
    cap = size.steps(stage) if steps is None else steps
    steps = min(steps_per_epoch * epochs, cap) if cap is not None else steps_per_epoch * epochs
    epochs_run = -(-steps // steps_per_epoch)
    pairs_per_sample = 4 if stage == "retrieval" else 1  # a caption with its image and three negatives
    # sequences scored by one validation, and by the final evaluation (VQA val = val + test images;
    # retrieval scores every caption against every image of the split)
    q = size.questions_per_image
    validation = {"pretrain": val, "vqa": (val + test) * q, "retrieval": 5 * size.retrieval_val_images ** 2,
                  "refexp": 2 * val}[stage]
    final = {"pretrain": 0, "vqa": (val + test) * q, "retrieval": 5 * test * test, "refexp": 2 * (val + test)}[stage]
    return (STAGE_SECONDS + steps * batch * pairs_per_sample * TRAIN_SEQUENCE_SECONDS
            + (epochs_run * validation + final) * EVAL_SEQUENCE_SECONDS)
