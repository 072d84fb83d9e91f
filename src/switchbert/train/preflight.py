"""The check before any work: every file a run will read exists, and the starting weights are there.

The task declares what it reads (``required_files``, ``optional_files``; ``switchbert.train.tasks``); this
module asks it, so the list of a task's files is written once. It sits above both the config and the
tasks, which is why it is not part of ``train/config.py``: the task modules import the config.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from switchbert.train.config import ConfigError, ExperimentConfig
from switchbert.train.tasks import Task, build_task, task_class

log = logging.getLogger(__name__)


def check_paths(config: ExperimentConfig, source: str = "<config>", need_train: bool = True) -> None:
    """Checks, before any work, that every file the task needs exists: its ``required_files`` (set and
    existing), and its ``optional_files`` when set (``switchbert.train.tasks``).

    Args:
        need_train: also require the training files and the starting weights (False for ``evaluate``).
    """
    task = task_class(config.task)
    d = config.data
    keys = list(task.required_files)
    if not need_train:  # evaluation reads the answer vocabulary from the checkpoint
        keys = [k for k in keys if "train" not in k]
    unset = [k for k in keys if d.path(k) is None]
    if unset:
        raise ConfigError(f"{source}: data.{unset[0]} is required for task {config.task!r} (it is null)")
    missing = [f"data.{k}: {d.path(k)}" for k in keys if not d.path(k).exists()]
    if missing:
        raise ConfigError(f"{source}: {missing[0]} does not exist (data.root = {d.root!r})"
                          + (f"; also missing: {'; '.join(missing[1:])}" if len(missing) > 1 else ""))
    for key in task.optional_files:
        p = d.path(key)
        if p is not None and not p.exists():
            raise ConfigError(f"{source}: data.{key}: {p} does not exist")
        if p is not None:
            keys.append(key)
    # Every data key but the feature store (an LMDB directory or an HDF5 file) names one file: a
    # directory there would otherwise end in an IsADirectoryError traceback deep in a loader.
    for key in keys:
        if key != "features" and d.path(key).is_dir():
            raise ConfigError(f"{source}: data.{key}: {d.path(key)} is a directory, expected a file")
    out = Path(config.output_dir).expanduser()
    if out.exists() and not out.is_dir():  # checked before any model is built
        raise ConfigError(f"{source}: output_dir: {out} exists and is not a directory")
    check_writable(out, source)
    if not need_train:
        return  # evaluation loads a checkpoint, not the starting weights
    m = config.model
    for key, value in (("model.bert_dir", m.bert_dir), ("model.init_from", m.init_from)):
        if value is not None and not Path(value).expanduser().exists():
            raise ConfigError(f"{source}: {key}: {value} does not exist")
    if m.bert_dir is not None and not Path(m.bert_dir).expanduser().is_dir():
        raise ConfigError(f"{source}: model.bert_dir: {m.bert_dir} is a file, expected a BERT directory")
    if m.init_from is not None and Path(m.init_from).expanduser().is_dir():
        check_architecture(config, source)


def check_writable(out: Path, source: str = "<config>") -> None:
    """``out`` (or, when it does not exist yet, its nearest existing parent) takes new entries: checked by
    making one as a checkpoint write does, so a read-only directory is named now, not after an epoch."""
    import tempfile

    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        Path(tempfile.mkdtemp(prefix=".write-check-", dir=existing)).rmdir()
    except OSError as e:
        raise ConfigError(f"{source}: output_dir: {existing}: not writable ({e.strerror or e}); choose another "
                          f"output_dir or fix the directory's permissions") from None


def check_architecture(config: ExperimentConfig, source: str = "<config>") -> None:
    """``model.init_from`` (a directory) holds the model ``model.preset`` plus overrides names, or the
    preset is ``from_checkpoint``: otherwise a ``ConfigError`` naming both (``models.build.check_init_from``)."""
    from switchbert.models.build import ArchitectureMismatchError, check_init_from

    m = config.model
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in m.overrides.items()}
    try:
        check_init_from(m.preset, Path(m.init_from).expanduser(), **overrides)
    except ArchitectureMismatchError as e:
        raise ConfigError(f"{source}: {e}") from None
    except (FileNotFoundError, ValueError) as e:  # no checkpoint there, or an unreadable config.json
        raise ConfigError(f"{source}: model.init_from: {e}") from None


def split_files_problem(task: Task, split: str) -> Optional[str]:
    """What keeps ``split`` from being read: a data key it needs that is unset or names no file
    (``"data.KEY: PATH does not exist"``), or None."""
    d = task.config.data
    for key in task.split_files(split):
        path = d.path(key)
        if path is None:
            return f"split {split!r} needs data.{key} (it is null)"
        if not path.exists():
            return f"split {split!r} reads data.{key}: {path}, which does not exist"
    return None


def check_splits(config: ExperimentConfig, source: str = "<config>", task: Optional[Task] = None) -> None:
    """Before the first training step: the validation split and the evaluation splits can be read.

    The split validated after each epoch (``Task.val_split``) is built as training will build it, so a
    question whose image is not in the feature store, or a malformed line, is a one-line error now rather
    than after an epoch. The evaluation splits (``eval.splits``, else the task's test splits) are built too
    when their files are there; a file that is not (a VQA test-std file named before it is downloaded) is a
    warning here and an error from ``evaluate``, which needs it.

    Raises:
        ConfigError: the validation split's files are unset or missing.
        DataError: an item of a split is bad (naming the file and the item), unless ``data.skip_bad``
            (then only the files are checked).
    """
    task = task or build_task(config)
    _check_feature_size(config, task, source)
    # With data.skip_bad a bad item is skipped and counted when the split is read, never an error: only
    # the files are checked here, and the skip summaries are said once, by training.
    build = (lambda split: None) if config.data.skip_bad else task.dataset
    val = task.val_split
    problem = split_files_problem(task, val)
    if problem:
        raise ConfigError(f"{source}: validation (eval.val_split={config.eval.val_split!r}): {problem}")
    build(val)
    for split in dict.fromkeys(config.eval.splits or task.test_splits):
        if split == val:
            continue
        problem = split_files_problem(task, split)
        if problem:
            log.warning("%s: evaluation: %s; `switchbert evaluate` will need it", source, problem)
            continue
        build(split)


def _check_feature_size(config: ExperimentConfig, task: Task, source: str) -> None:
    """The store's feature size is the model's ``region_feat_dim`` (the model that will train: the
    init_from directory's, else the preset's with overrides), checked before the run directory is made."""
    from switchbert.models.build import FROM_CHECKPOINT
    from switchbert.models.directory import read_config, resolve_checkpoint
    from switchbert.presets import get_config

    m, have = config.model, task.store.feat_dim
    if have is None:
        return
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in m.overrides.items()}
    try:
        if m.init_from is not None and Path(m.init_from).expanduser().is_dir():
            model = read_config(resolve_checkpoint(Path(m.init_from).expanduser())).replace(**overrides)
        elif m.preset != FROM_CHECKPOINT:
            model = get_config(m.preset, **overrides)
        else:
            return
    except (OSError, ValueError):
        return  # reported, with its own words, where the model is built
    if model.region_feat_dim != have:
        raise ConfigError(f"{source}: data.features: {task.store.path} has {have}-d region features but model "
                          f"{model.name!r} expects region_feat_dim={model.region_feat_dim} (set "
                          f"model.overrides.region_feat_dim or use other features)")


def check_eval_splits(task: Task, splits: Sequence[str], source: str = "<config>") -> None:
    """Before ``evaluate`` scores anything: every requested split's files are set and exist."""
    for split in splits:
        problem = split_files_problem(task, split)
        if problem:
            raise ConfigError(f"{source}: {problem}")
