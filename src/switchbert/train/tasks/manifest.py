"""A task's samples from a data directory with a ``manifest.json`` (``switchbert synth`` writes one;
for the real datasets write one by hand): route analysis and the demo read datasets through here.

The manifest maps data keys (``DataSection`` fields; each task declares those it reads) to paths
relative to the directory, or absolute. :func:`manifest_config` turns it into the experiment config a
task would train with: the task's controlled text length (``Task.text_len``) and the config's
defaults, with ``data.KEY=VALUE`` overrides (``data.vqa_protocol=trainval``) on top, so the datasets
are those training and evaluation build.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from switchbert.train.config import ExperimentConfig, from_dict, parse_override, set_dotted
from switchbert.train.tasks import Task, build_task, data_keys, task_class


class MissingManifestKey(KeyError):
    """The manifest names no file for a task (or split) that was asked for."""

    def __init__(self, message: str, task: str):
        super().__init__(message)
        self.task = task

    def __str__(self) -> str:  # the message, not KeyError's repr of it
        return str(self.args[0])


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """``data_dir/manifest.json``; FileNotFoundError saying what DATA must be when it is missing."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DATA must be a directory with a manifest.json naming its files "
                                "(`switchbert synth DIR` writes one; see `switchbert routes --help`)")
    return json.loads(path.read_text())


def manifest_config(data_dir: Path, task: str, overrides: Sequence[str] = (),
                    manifest: Optional[dict[str, Any]] = None, output_dir: Optional[Path] = None) -> ExperimentConfig:
    """The experiment config of ``task`` on a manifest directory.

    Args:
        overrides: ``key=value`` items as on the ``switchbert train`` command line (``data.vqa_protocol=trainval``).
        manifest: the parsed manifest (default: read from ``data_dir``).
        output_dir: where the task may cache derived files (retrieval with data.val_from_train); default a
            directory under the system's temporary directory.
    """
    manifest = read_manifest(data_dir) if manifest is None else manifest
    keys = set(data_keys())
    data = {k: str(v) for k, v in manifest.items() if k in keys}
    data.update(root=str(data_dir), max_text_len=task_class(task).text_len)
    out = output_dir if output_dir is not None else Path(tempfile.gettempdir()) / "switchbert-manifest"
    raw: dict[str, Any] = {"task": task, "output_dir": str(out), "data": data}
    source = f"{data_dir}/manifest.json"
    for item in overrides:
        key, value = parse_override(item, source=source)
        set_dotted(raw, key, value, source=f"{source} (override {item!r})")
    return from_dict(raw, source=source)


def manifest_task(data_dir: Path, task: str, split: str, overrides: Sequence[str] = (),
                  manifest: Optional[dict[str, Any]] = None, output_dir: Optional[Path] = None) -> Task:
    """The task (datasets only, no model) after checking that the manifest names the files ``split`` reads.

    Raises:
        MissingManifestKey: naming the first key the manifest lacks.
    """
    manifest = read_manifest(data_dir) if manifest is None else manifest

    def missing(key: str) -> MissingManifestKey:
        return MissingManifestKey(f"{data_dir}/manifest.json has no {key!r}: cannot analyse {task} on this split",
                                  task)

    if "features" not in manifest:  # else DataSection's default file name would stand in for it
        raise missing("features")
    t = build_task(manifest_config(data_dir, task, overrides, manifest, output_dir))
    for key in t.split_files(t.analysis_split(split)):
        if getattr(t.config.data, key) is None:
            raise missing(key)
    return t


def collate_of(dataset: Dataset):
    """The collate function of one of the data layer's datasets, also inside a Subset or ConcatDataset."""
    while not hasattr(dataset, "collate"):
        dataset = dataset.dataset if isinstance(dataset, Subset) else dataset.datasets[0]
    return dataset.collate


def analysis_batches(task: Task, split: str, batch_size: int, max_samples: Optional[int] = None,
                     seed: int = 0) -> tuple[Iterable, int]:
    """Batches of the samples route analysis reads (``Task.analysis_dataset``) of ``split`` and how many
    samples they hold. ``split`` is what the user asked for; the task may read another
    (``Task.analysis_split``: VQA under trainval reads minival for val)."""
    from switchbert.data import make_dataloader

    ds = task.analysis_dataset(task.analysis_split(split))
    collate = collate_of(ds)
    n = len(ds)
    if max_samples is not None and max_samples < n:
        # A random subset is representative; sorted so neighbouring samples still share images.
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        ds, n = Subset(ds, keep.tolist()), max_samples
    return make_dataloader(ds, batch_size, collate_fn=collate), n


def task_batches(data_dir: Path, task: str, split: str, batch_size: int, max_samples: Optional[int] = None,
                 seed: int = 0, overrides: Sequence[str] = (), output_dir: Optional[Path] = None
                 ) -> tuple[Iterable, int]:
    """:func:`analysis_batches` of ``task`` on a manifest directory (:func:`manifest_task`)."""
    t = manifest_task(Path(data_dir), task, split, overrides, output_dir=output_dir)
    return analysis_batches(t, split, batch_size, max_samples, seed)


__all__ = ["MissingManifestKey", "analysis_batches", "collate_of", "manifest_config", "manifest_task",
           "read_manifest", "task_batches"]
