"""The study's grid: which models, data regimes, tasks, pretraining budgets and seeds, and how big.

A *pipeline* is one (model, misalignment level, pretraining budget, seed): it pretrains once (unless the
budget is 0) and fine-tunes every task from that pretraining. A *cell* of the results table is one
(model, level, task, budget), its value one number per seed. Every model of a cell trains the same
optimiser steps at the same batch on the same data (the grid's ``size``), so the models differ in their
architecture alone.

The three VQA families (``switchbert.data.synth.QUESTION_FAMILIES``) are three data directories per
level that differ only in their questions: the generator draws questions from their own random
stream, so the features, captions and referring expressions are the same, and one pretraining serves
every family (the runner checks the files are identical before it shares it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from switchbert.demo.sizes import DemoSize

MODELS: dict[str, dict[str, Any]] = {
    "UNITER": {"sab_modes": ["J"], "sib": None},  # no switching at all: the reference of every comparison
    "SAB-only": {"sib": None},  # switches the attention mode, takes each layer's output as its input
    "SIB-only": {"sab_modes": ["J"]},  # joint attention only, switches the inputs
    "Switch-BERT": {},
}
"""The compared models: a name and its ``ModelConfig`` overrides on the grid's preset (docs/method.md §3.4)."""

REFERENCE = "UNITER"
"""The model every other is compared with."""

VQA_FAMILIES: tuple[str, ...] = ("cross_modal", "cross_then_intra", "intra_modal")
"""``synth.QUESTION_FAMILIES``, in the order of the report."""

TASKS: tuple[str, ...] = tuple(f"vqa_{f}" for f in VQA_FAMILIES) + ("retrieval", "refexp")
"""The fine-tuning stages of a pipeline, in order: one per VQA family, then retrieval and RefExp."""

HEADLINE: dict[str, tuple[str, str, str]] = {
    **{f"vqa_{f}": (f"VQA {f.replace('_', '-')} (val acc)", "val", "accuracy") for f in VQA_FAMILIES},
    "retrieval": ("IR R@1 (test)", "test", "ir_r1"),
    "refexp": ("RefExp (testA acc)", "testA", "accuracy"),
}
"""Per task: (title, split, metric) of the number the study compares."""


def task_recipe(task: str) -> str:
    """The synthetic recipe a task's stage runs (``vqa_cross_modal`` -> ``vqa``)."""
    return "vqa" if task.startswith("vqa_") else task


def task_family(task: str) -> Optional[str]:
    """The VQA family of a task (None for retrieval and RefExp)."""
    return task[len("vqa_"):] if task.startswith("vqa_") else None


@dataclass(frozen=True)
class Level:
    """One modality-misalignment level: the synthetic region features' ``abstraction`` (0 word-level,
    1 entangled) and ``clutter`` (duplicate and background regions); docs/data.md."""

    abstraction: float
    clutter: float

    @property
    def name(self) -> str:
        return f"a{self.abstraction:g}-c{self.clutter:g}"

    @property
    def misalignment(self) -> float:
        """The figure's x axis: the mean of the two knobs."""
        return (self.abstraction + self.clutter) / 2


@dataclass(frozen=True)
class StudyGrid:
    """A study's grid and size.

    Attributes:
        name: ``quick``, ``default`` or ``full``.
        size: data and training budget shared by every pipeline (abstraction, clutter and question types
            are set per level and family).
        models: model names (keys of :data:`MODELS`); ``REFERENCE`` must be one of them.
        levels: misalignment levels.
        budgets: pretraining budgets as (name, optimiser steps); 0 = no pretraining.
        seeds: training seeds per (model, level, budget); every model uses the same ones.
        tasks: fine-tuning tasks (:data:`TASKS` or a subset).
        route_samples: held-out samples per task whose routes and switch probabilities are analysed.
    """

    name: str
    size: DemoSize
    models: tuple[str, ...] = tuple(MODELS)
    levels: tuple[Level, ...] = (Level(0.0, 0.0), Level(0.5, 0.5), Level(1.0, 1.0))
    budgets: tuple[tuple[str, int], ...] = (("none", 0), ("short", 25), ("longer", 150))
    seeds: int = 3
    tasks: tuple[str, ...] = TASKS
    route_samples: int = 256

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or REFERENCE not in self.models:
            raise ValueError(f"study grid {self.name!r}: models {list(self.models)} must be among {list(MODELS)} "
                             f"and include {REFERENCE}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"study grid {self.name!r}: unknown tasks {bad}; choose from {list(TASKS)}")
        if self.seeds < 1:
            raise ValueError(f"study grid {self.name!r}: seeds must be at least 1, got {self.seeds}")

    def pipelines(self, first_seed: int = 0) -> list["Pipeline"]:
        """Every (model, level, budget, seed), in run order: seeds outermost, so that an interrupted study
        has whole comparisons (every model of a seed) rather than one model's seeds."""
        return [Pipeline(model, level, budget, steps, first_seed + s)
                for s in range(self.seeds) for level in self.levels for budget, steps in self.budgets
                for model in self.models]

    def cells(self) -> list[tuple[str, Level, str, str]]:
        """Every (model, level, task, budget name) of the results table."""
        return [(model, level, task, budget) for level in self.levels for budget, _ in self.budgets
                for task in self.tasks for model in self.models]

    def level_size(self, level: Level, family: Optional[str]) -> DemoSize:
        """The size whose data are this level's (and this VQA family's questions)."""
        from switchbert.data.synth import QUESTION_FAMILIES

        return replace(self.size, abstraction=level.abstraction, clutter=level.clutter,
                       question_types=QUESTION_FAMILIES[family] if family else None)

    def families(self) -> list[str]:
        """The VQA families the grid's tasks need (at least one: its data directory serves the others)."""
        fams = [task_family(t) for t in self.tasks if task_family(t)]
        return [f for f in fams if f] or [VQA_FAMILIES[0]]


@dataclass(frozen=True)
class Pipeline:
    """One (model, level, pretraining budget, seed): its pretraining and every task's fine-tuning."""

    model: str
    level: Level
    budget: str
    pretrain_steps: int
    seed: int

    @property
    def slug(self) -> str:
        """Its run directory under OUT/runs."""
        return f"{self.level.name}/{self.budget}/{self.model.lower().replace('-', '')}/seed{self.seed}"


def _size(**kw: Any) -> DemoSize:
    # Epochs are high so that the step caps alone set every stage's length (equal steps per cell).
    base: dict[str, Any] = dict(pretrain_epochs=1000, finetune_epochs=1000, use_bert=False, dropout=0.0,
                                initializer_range=0.08, lr=6e-4, seeds=1)
    base.update(kw)
    return DemoSize(**base)


QUICK = StudyGrid(
    "quick",
    # the tiny preset on 160 scenes: ~5 minutes projected on 2 idle cores, 6m24s measured on the shared VM
    # at load 4-5 (BENCHMARKS.md "The study")
    _size(images=160, preset="switchbert-tiny", feat_dim=64, num_classes=40, batch_size=32, max_steps=50,
          task_steps=(("retrieval", 40), ("refexp", 30)), task_batch=(("retrieval", 16),), lr=1e-3,
          retrieval_val_images=10, route_samples=128),
    levels=(Level(0.0, 0.0), Level(1.0, 1.0)), budgets=(("short", 25),), seeds=3, route_samples=128,
)
"""Four models x 2 levels x 1 budget x 3 seeds, every task: the study's bookkeeping end to end, in
minutes. Far too small for a verdict."""

DEFAULT = StudyGrid(
    "default",
    _size(images=400, preset="switchbert-tiny", feat_dim=64, num_classes=40, batch_size=32, max_steps=150,
          task_steps=(("retrieval", 150), ("refexp", 100)), task_batch=(("retrieval", 16),), lr=1e-3,
          retrieval_val_images=10, route_samples=256),
)
"""Four models x 3 levels x 3 budgets (0 / 25 / 150 pretraining steps) x 3 seeds, every task, on the
tiny preset: projected to fit 90 minutes on 2 cores (``projected_seconds``)."""

FULL = StudyGrid(
    "full",
    _size(images=1000, preset="switchbert-mini", feat_dim=256, num_classes=100, batch_size=32, max_steps=300,
          task_steps=(("retrieval", 600), ("refexp", 150)), task_batch=(("retrieval", 16),),
          retrieval_val_images=20, route_samples=500),
    seeds=5, route_samples=500,
)
"""The demo's model and budget (switchbert-mini, 300 VQA steps) over the whole grid with 5 seeds: many
hours on 2 cores (projected in docs/study.md), minutes per pipeline on a GPU."""

GRIDS: dict[str, StudyGrid] = {"quick": QUICK, "default": DEFAULT, "full": FULL}

# Seconds per unit of the demo's stage weight (``demo.progress.stage_weight``, calibrated on
# switchbert-mini) for each preset, measured on one thread of the 2-core VM (BENCHMARKS.md "The study").
# The tiny preset's stages are mostly start-up, checkpoints and evaluation: the fastest stages of the first
# quick-grid run took 1.0-1.2x (pretraining 2x) the mini-calibrated weight x 0.35, so 0.5; on the VM shared
# with other jobs (load 4-6) whole quick grids ran 1.3-2.5x slower than projected.
PRESET_COST: dict[str, float] = {"switchbert-mini": 1.0, "switchbert-tiny": 0.5}


def projected_seconds(grid: StudyGrid, jobs: int = 2, parallel_cost: float = 1.2) -> float:
    """The grid's expected wall time on the reference machine: every stage's weight (with its own step
    count), scaled by the preset's measured cost, spread over ``jobs`` workers that each run
    ``parallel_cost`` times slower than one alone (``demo.progress.Progress.PARALLEL_COST``)."""
    total = sum(pipeline_seconds(grid, p) for p in grid.pipelines())
    return total * (parallel_cost if jobs > 1 else 1.0) / jobs


def pipeline_seconds(grid: StudyGrid, p: Pipeline, manifest: Optional[dict[str, Any]] = None) -> float:
    """Expected seconds of one pipeline on one thread of the reference machine."""
    return sum(stage_seconds(grid, p, stage, manifest) for stage in pipeline_stages(grid, p))


def stage_seconds(grid: StudyGrid, p: Pipeline, stage: str, manifest: Optional[dict[str, Any]] = None) -> float:
    """Expected seconds of one stage of a pipeline (the progress estimate's weight)."""
    from switchbert.demo.progress import stage_weight

    recipe = task_recipe(stage)
    steps = p.pretrain_steps if stage == "pretrain" else None
    cost = PRESET_COST.get(grid.size.preset, 1.0)
    return cost * stage_weight(recipe, grid.size, manifest or {}, steps=steps)


def pipeline_stages(grid: StudyGrid, p: Pipeline) -> tuple[str, ...]:
    """A pipeline's stages: pretraining when its budget has steps, then every task."""
    return (("pretrain",) if p.pretrain_steps > 0 else ()) + grid.tasks


__all__ = ["DEFAULT", "FULL", "GRIDS", "HEADLINE", "Level", "MODELS", "Pipeline", "QUICK", "REFERENCE", "StudyGrid",
           "TASKS", "VQA_FAMILIES", "pipeline_seconds", "pipeline_stages", "projected_seconds",
           "stage_seconds", "task_family", "task_recipe"]
