"""Scoring a checkpoint on the splits of its task, and the result records reports are built from.

``evaluate(config, checkpoint, splits)`` writes (rank 0) into ``OUTPUT_DIR/eval/``:
    metrics.json                  {"checkpoint": path, split: {metric: value}, "checkpoints": {split: path}}
    vqa_results_<split>.json      VQA: the evaluation server's format ([{question_id, answer}]);
                                  ``test`` is written as ``test-dev``
    vqa_accuracy_<split>.json     VQA with annotations: the official evaluator's breakdown
                                  ({overall, perAnswerType, perQuestionType})
    retrieval_scores_<split>.pt   retrieval: the (captions, images) score matrix
and merges one record per (split, metric) into ``OUTPUT_DIR/results.jsonl``:
    {"model", "task", "metric", "seed", "value", "split", "checkpoint", "recipe"}
Every file is per split, and both ``metrics.json`` and ``results.jsonl`` are merged, not replaced:
evaluating another split later adds to what is there and replaces only that split's entries.
Metric names are ``<metric>_<split>`` (``accuracy_val``, ``accuracy_testA``), except retrieval on
``test``, which is the paper's number and keeps the plain name (``ir_r1``, ``tr_r1``), the names
``switchbert.metrics.TABLE3_COLUMNS`` looks up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from switchbert.dirlock import DirectoryLock
from switchbert.io import atomic_write_json, atomic_write_text, read_jsonl
from switchbert.weights.pretrained import load_pretrained
from switchbert.train.checkpoint import load_heads, resolve_checkpoint
from switchbert.train.config import ExperimentConfig
from switchbert.train.distributed import barrier, init_distributed
from switchbert.train.preflight import check_eval_splits
from switchbert.train.tasks import EvalContext, build_task
from switchbert.train.trainer import model_overrides

RESULTS_NAME = "results.jsonl"
MERGE_LOCK_NAME = ".merge.lock"


def record_metric(task: str, metric: str, split: str) -> str:
    """The metric name a result record carries (see the module docstring)."""
    if task == "retrieval" and split == "test":
        return metric
    return f"{metric}_{split}"


def evaluate(
    config: ExperimentConfig,
    checkpoint: Optional[Path] = None,
    splits: Optional[Sequence[str]] = None,
    out_dir: Optional[Path] = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Scores a checkpoint.

    Args:
        config: the run's experiment config.
        checkpoint: a checkpoint directory or run directory (default: ``output_dir``'s best, else last).
        splits: default ``eval.splits``, else the task's test splits.
        out_dir: where result files go (default ``output_dir/eval``).
        progress: progress bars (rank 0, on a terminal).

    Returns:
        {split: {metric: value}}.
    """
    ctx = init_distributed(config.train.device)
    # Absolute: records and metrics.json name the checkpoint wherever the report is later made from.
    ckpt = resolve_checkpoint(Path(checkpoint) if checkpoint is not None else Path(config.output_dir)).resolve()
    runtime = {k: v for k, v in model_overrides(config).items() if k in _RUNTIME_FIELDS}
    model = load_pretrained(ckpt, **runtime).to(ctx.device).eval()
    task = build_task(config, model.config, ctx)
    task.load_assets(ckpt)  # VQA: the answer vocabulary the head was trained with
    heads = task.build_heads(model)
    load_heads(heads, ckpt)
    heads.to(ctx.device).eval()
    splits = list(splits or config.eval.splits or task.test_splits)
    check_eval_splits(task, splits, str(Path(config.output_dir) / "config.yaml"))
    out = Path(out_dir) if out_dir is not None else Path(config.output_dir) / "eval"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ectx = EvalContext(ctx, config.eval.batch_size, progress=progress and sys.stderr.isatty(), out_dir=out)
    name = trained_name(config, model.config.name)
    results: dict[str, dict[str, float]] = {}
    for split in splits:
        results[split] = task.evaluate(model, heads, split, ectx)
        if ctx.is_main:  # split by split: a later split that fails keeps this one's numbers
            records = [
                {"model": name, "task": config.task, "metric": record_metric(config.task, m, split),
                 "seed": config.train.seed, "value": v, "split": split, "checkpoint": str(ckpt),
                 "recipe": config.recipe_hash}
                for m, v in results[split].items()
            ]
            save_results(Path(config.output_dir), out, {split: results[split]}, str(ckpt), records)
    barrier(ctx)
    return results


def trained_name(config: ExperimentConfig, model_name: str) -> str:
    """The model's name in result records (``ExperimentConfig.report_name``), with the checkpoint's model
    name in place of ``from_checkpoint`` when the run took its architecture from ``model.init_from``, so
    the records name what actually trained."""
    from switchbert.models.build import FROM_CHECKPOINT

    name = config.report_name
    if not config.name and config.model.preset == FROM_CHECKPOINT:
        name = model_name.removesuffix("-base") + name[len(FROM_CHECKPOINT):]
    return name


def save_results(output_dir: Path, eval_dir: Path, results: dict[str, dict[str, float]], checkpoint: str,
                 records: list[dict[str, Any]]) -> None:
    """Merges one evaluation into ``eval_dir/metrics.json`` and ``output_dir/results.jsonl``.

    Two evaluations of one run (other splits, other checkpoints) may finish together, and each merge
    reads, adds and rewrites: so the merges wait for each other on ``output_dir/.merge.lock``, or one
    would silently drop the other's entries. It is not the run's lock, so evaluating a run while it
    trains stays allowed.
    """
    with DirectoryLock(output_dir, name=MERGE_LOCK_NAME, wait=True):
        merge_metrics(eval_dir / "metrics.json", results, checkpoint)
        merge_records(output_dir / RESULTS_NAME, records)


# Config fields that change how a loaded model runs, not its weights.
_RUNTIME_FIELDS = frozenset({"attention_impl", "hidden_dropout", "attention_dropout", "fusion_dropout"})


def merge_metrics(path: Path, results: dict[str, dict[str, float]], checkpoint: str) -> None:
    """Adds ``{split: {metric: value}}`` to ``metrics.json``, keeping the other splits already there.

    ``checkpoint`` is the latest evaluation's; ``checkpoints`` says which checkpoint each split's
    numbers came from.
    """
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: malformed JSON ({exc}); move it away to start a fresh record") from exc
    checkpoints = dict(data.get("checkpoints", {}))
    for split in results:
        checkpoints[split] = checkpoint
    data.update(results)
    data["checkpoint"], data["checkpoints"] = checkpoint, checkpoints
    atomic_write_json(path, data)


def merge_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Adds records to a JSON-lines file, replacing any with the same (model, task, metric, seed, split)."""
    def key(r: dict[str, Any]) -> tuple:
        return (r["model"], r["task"], r["metric"], r["seed"], r.get("split"))

    existing = []
    if path.exists():
        existing = read_jsonl(path)
    new_keys = {key(r) for r in records}
    merged = [r for r in existing if key(r) not in new_keys] + records
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in merged))
