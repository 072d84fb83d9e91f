"""One module per objective: what it reads, its datasets, its heads, its loss and its evaluation
(docs/method.md §6-§7).

    pretrain   Conceptual Captions pairs; MLM + MRC-KL + ITM; validation loss
    vqa        VQAv2; BCE on soft scores; official VQA accuracy + the evaluation server's result file
    retrieval  Flickr30k; 4-way cross-entropy; R@1/5/10 both directions over all pairs of a split
    refexp     RefCOCO+; BCE against region IoU; accuracy per split

Each task class declares the data keys it reads (``required_files``, ``optional_files``,
``lazy_files``) and builds the dataset of a split (``dataset(split)``): ``check_paths``, route
analysis (``manifest.task_batches``) and the demo ask it rather than keeping their own lists.
"""

from __future__ import annotations

from typing import Optional

from switchbert.config import ModelConfig
from switchbert.train.config import ExperimentConfig
from switchbert.train.distributed import DistContext
from switchbert.train.tasks.base import HELDOUT, EvalContext, StepOutput, Task, heldout_images
from switchbert.train.tasks.pretrain import PretrainTask
from switchbert.train.tasks.refexp import RefExpTask
from switchbert.train.tasks.retrieval import RetrievalTask
from switchbert.train.tasks.vqa import VQA_PROTOCOLS, VQA_TEST_SPLITS, VQA_VOCAB_FILE, VQATask

TASK_CLASSES: dict[str, type[Task]] = {
    "pretrain": PretrainTask,
    "vqa": VQATask,
    "retrieval": RetrievalTask,
    "refexp": RefExpTask,
}


def task_class(name: str) -> type[Task]:
    """The class of task ``name`` (a ``train.config.TASKS`` name)."""
    try:
        return TASK_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASK_CLASSES)}") from None


def data_keys() -> tuple[str, ...]:
    """Every data key some task reads (the path keys of ``DataSection`` and of a data manifest)."""
    keys: dict[str, None] = {}
    for cls in TASK_CLASSES.values():
        keys.update(dict.fromkeys(cls.data_keys()))
    return tuple(keys)


def build_task(config: ExperimentConfig, model_config: Optional[ModelConfig] = None,
               ctx: Optional[DistContext] = None) -> Task:
    """The task of ``config``. Without a model config and a process context it only builds datasets."""
    return task_class(config.task)(config, model_config, ctx)


__all__ = ["EvalContext", "HELDOUT", "PretrainTask", "RefExpTask", "RetrievalTask", "StepOutput", "TASK_CLASSES",
           "Task", "VQATask", "VQA_PROTOCOLS", "VQA_TEST_SPLITS", "VQA_VOCAB_FILE", "build_task", "data_keys",
           "heldout_images", "task_class"]
