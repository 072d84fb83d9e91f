"""How big a demo runs (``--size``), and the two models it compares.

A size is data knobs plus the few training values in which the demo departs from the packaged
synthetic recipes (``configs/synth/<stage>.yaml``): :meth:`DemoSize.stage_overrides` gives those
as dotted keys, and everything else comes from the recipes. Why each value is what it is was
measured: docs/training.md, "Learning rates for small models", and BENCHMARKS.md, "The demo".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

TASKS: tuple[str, ...] = ("vqa", "retrieval", "refexp")
"""The fine-tuning tasks, in the order each pipeline runs them and the report lists them."""

STAGES: tuple[str, ...] = ("pretrain",) + TASKS
"""A (model, seed) pipeline's stages, in order; each is the synthetic recipe of that name."""


@dataclass(frozen=True)
class DemoSize:
    """How big a demo runs. ``default`` takes about 9 minutes on 2 CPU cores (2 seeds, 2 jobs).

    Attributes:
        images: scenes the synthetic benchmark generates.
        preset: the model preset both models start from.
        feat_dim, num_classes: the synthetic detector's region-feature size and class count.
        pretrain_epochs, finetune_epochs: epochs of the pretraining and of each fine-tuning stage.
        batch_size: every stage's batch, unless ``task_batch`` names the stage.
        use_bert: start from the offline MiniLM weights when installed (only ``switchbert-small`` has
            their shape).
        route_samples: held-out samples per task whose routes the report analyses.
        lr: every stage's learning rate unless ``task_lr`` names it; None = the recipe's. Small models
            from random weights need their own (docs/training.md, "Learning rates for small models").
        task_lr: per-stage learning rates, as ((stage, lr), ...).
        max_steps: optimizer steps per stage, so the time stays bounded (None = full epochs).
        task_steps: per-stage step caps when they differ from ``max_steps``, as ((stage, steps), ...).
        task_batch: per-stage batch sizes when they differ from ``batch_size``, as ((stage, size), ...).
        log_every: training log interval; None = the recipe's.
        retrieval_val_images: images whose pairs are scored at each epoch's retrieval validation.
        seeds: how many times each model is trained when ``--seeds`` is not given.
        abstraction, clutter: the synthetic region features, from word-level (0) to entangled (1), and
            how many duplicate / background regions surround the objects (docs/data.md).
        questions_per_image: VQA questions per scene.
        question_types: VQA question types (None = the generator's mix; ``synth.QUESTION_FAMILIES``).
        initializer_range: weight-init std; None = the preset's (BERT's 0.02, ~4x too small at width
            32-128 for the retrieval scores to differ: docs/training.md).
        dropout: every layer's and head's dropout; None = the preset's 0.1, which swamps a small
            model's pair signal from random weights (docs/training.md).
    """

    images: int
    preset: str
    feat_dim: int
    num_classes: int
    pretrain_epochs: int
    finetune_epochs: int
    batch_size: int
    use_bert: bool
    route_samples: int = 512
    lr: Optional[float] = 3e-4
    task_lr: tuple[tuple[str, float], ...] = ()
    max_steps: Optional[int] = None
    task_steps: tuple[tuple[str, int], ...] = ()
    task_batch: tuple[tuple[str, int], ...] = ()
    log_every: Optional[int] = None
    retrieval_val_images: int = 50
    seeds: int = 1
    abstraction: float = 1.0
    clutter: float = 1.0
    questions_per_image: int = 5
    question_types: Optional[tuple[str, ...]] = None
    initializer_range: Optional[float] = None
    dropout: Optional[float] = None

    def steps(self, stage: str) -> Optional[int]:
        """The step cap of one stage (None = full epochs)."""
        return dict(self.task_steps).get(stage, self.max_steps)

    def batch(self, stage: str) -> int:
        """The batch size of one stage."""
        return dict(self.task_batch).get(stage, self.batch_size)

    def epochs(self, stage: str) -> int:
        return self.pretrain_epochs if stage == "pretrain" else self.finetune_epochs

    def stage_lr(self, stage: str) -> Optional[float]:
        """The learning rate of one stage (None = the recipe's)."""
        return dict(self.task_lr).get(stage, self.lr)

    def model_overrides(self) -> dict[str, Any]:
        """``ModelConfig`` fields this size sets on the preset (both models)."""
        out: dict[str, Any] = {"region_feat_dim": self.feat_dim}
        if self.initializer_range:
            out["initializer_range"] = self.initializer_range
        if self.dropout is not None:
            out.update(hidden_dropout=self.dropout, attention_dropout=self.dropout, fusion_dropout=self.dropout)
        return out

    def stage_overrides(self, stage: str) -> dict[str, Any]:
        """This size's departures from the recipe of ``stage``, as dotted keys (``train.lr``)."""
        out: dict[str, Any] = {
            "model.preset": self.preset,
            "train.epochs": self.epochs(stage),
            "train.max_steps": self.steps(stage),
            "train.batch_size": self.batch(stage),
            "eval.retrieval_val_images": self.retrieval_val_images,
        }
        if self.stage_lr(stage) is not None:
            out["train.lr"] = self.stage_lr(stage)
        if self.log_every is not None:
            out["train.log_every"] = self.log_every
        return out


SIZES: dict[str, DemoSize] = {
    # CI: seconds. A 3-layer, 32-wide model, word-level features on uncluttered scenes; a log line
    # every step of its 4.
    "tiny": DemoSize(images=60, preset="switchbert-tiny", feat_dim=64, num_classes=40, pretrain_epochs=1,
                     finetune_epochs=1, batch_size=16, use_bert=False, route_samples=64, max_steps=4,
                     log_every=1, abstraction=0.0, clutter=0.0, initializer_range=0.08),
    # The README's demo: ~9 minutes on 2 CPU cores, two seeds two at a time. A 4-layer, 128-wide model
    # from random weights on word-level features and the two attribute question types, the only ones
    # it learns in this budget; retrieval gets 600 steps at batch 16 because Switch-BERT leaves ln 4
    # late (all measured: BENCHMARKS.md "The demo", docs/training.md).
    "default": DemoSize(images=1000, preset="switchbert-mini", feat_dim=256, num_classes=100, pretrain_epochs=1,
                        finetune_epochs=3, batch_size=32, use_bert=False, route_samples=500, max_steps=100,
                        seeds=2, abstraction=0.0, clutter=0.0, retrieval_val_images=20, dropout=0.0,
                        initializer_range=0.08, question_types=("color_of_shape", "shape_of_color"),
                        lr=6e-4, task_steps=(("vqa", 300), ("retrieval", 600), ("refexp", 150)),
                        task_batch=(("retrieval", 16),)),
    # The MiniLM-shaped model from the offline MiniLM weights on entangled features, more data and
    # epochs (about two hours per seed on a 2-core CPU; minutes on a GPU). BERT-initialised, so the
    # paper's rates (docs/method.md §7), retrieval's 5e-5 a little above the paper's 2e-5 for the
    # shorter run.
    "large": DemoSize(images=10000, preset="switchbert-small", feat_dim=2048, num_classes=1601, pretrain_epochs=2,
                      finetune_epochs=3, batch_size=64, use_bert=True, route_samples=2000, seeds=3,
                      lr=None, task_lr=(("pretrain", 1e-4), ("vqa", 1e-4), ("retrieval", 5e-5), ("refexp", 1e-4)),
                      abstraction=0.5, clutter=1.0),
}

MODELS: dict[str, dict[str, Any]] = {
    "Switch-BERT": {},
    "UNITER": {"sab_modes": ["J"], "sib": None},  # the same encoder without switching (docs/method.md §3.4)
}
"""The compared models: a report name and its ``ModelConfig`` overrides on the size's preset."""


def run_slug(model: str) -> str:
    """A model's directory name under OUT/runs ("Switch-BERT" -> "switchbert")."""
    return model.lower().replace("-", "")
