"""What every task shares: the ``Task`` interface, one training step's output, the evaluation context,
and the held-out training images of ``data.val_from_train`` (docs/method.md §6-§7).

A task owns what it reads: the data keys it needs (``required_files``; ``check_paths`` asks for them),
the datasets of its splits (``dataset(split)``; training, evaluation, route analysis and the demo read
them from here), its heads, its loss and its evaluation. It never owns the model: the trainer passes
the model and the heads in. Evaluation runs on this process's contiguous share of the split and gathers
the per-sample results on every process, so the metrics are those of the whole split whatever the
number of processes.

Dimension legend: B batch, T text tokens, N real regions, A answers, K = 4 retrieval candidates.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from switchbert.batch import Batch
from switchbert.config import ModelConfig
from switchbert.data import load_tokenizer, make_dataloader, open_feature_store
from switchbert.models.base import VLModel
from switchbert.outputs import LayerRoute
from switchbert.train.config import ConfigError, ExperimentConfig
from switchbert.train.distributed import DistContext, shard_range


@dataclass
class StepOutput:
    """One micro-batch's forward pass.

    Attributes:
        loss: scalar objective (float32).
        parts: named scalar components for logging (detached).
        routes: the encoder's per-layer routes (detached; logged). Nothing else of the encoder output is
            returned: DDP looks for unused parameters from the forward's outputs, so an output tensor the
            loss does not use (a region-only head leaves ``pooled`` unused) would hide them.
    """

    loss: Tensor
    parts: dict[str, Tensor]
    routes: tuple[LayerRoute, ...] = ()


@dataclass
class EvalContext:
    """What an evaluation needs besides the model."""

    dist: DistContext
    batch_size: int
    progress: bool = False
    out_dir: Optional[Path] = None  # where result files go (rank 0 writes)
    max_images: int = 0  # retrieval: score only the first N images of the split (0 = all)
    autocast: Any = field(default_factory=lambda: contextlib.nullcontext)


HELDOUT = "heldout"
"""The split of training images held out by ``data.val_from_train`` (every task but pretraining)."""


def heldout_images(image_ids: Any, fraction: float, seed: int) -> set[str]:
    """The images ``data.val_from_train`` holds out of training: ``round(fraction * n)`` of the distinct
    ``image_ids`` (at least one, and at least one left to train on), chosen by a seeded hash of each id.

    Whole images are held out, so no question, caption or expression of a held-out image is trained on.
    The choice depends only on the set of ids, ``fraction`` and ``seed``: not on their order, the run's
    ``train.seed``, the number of processes or the library's random streams.
    """
    import hashlib

    ids = sorted({str(i) for i in image_ids})
    if fraction <= 0 or not ids:
        return set()
    if len(ids) < 2:
        raise ConfigError(f"data.val_from_train: {len(ids)} training image(s); need at least 2 to hold one out")
    k = min(max(1, round(fraction * len(ids))), len(ids) - 1)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    return set(ranked[:k])


class Task:
    """Base class. Subclasses set the class attributes and implement the methods marked "to implement".

    What a task reads is declared here, once: ``check_paths`` requires ``required_files`` (and checks
    ``optional_files`` when set), a manifest directory maps onto these keys (``manifest_config``), and
    ``dataset(split)`` builds each split from them.
    """

    name: str = ""
    metric_names: tuple[str, ...] = ()
    default_best: str = ""
    lower_is_better: frozenset[str] = frozenset()
    test_splits: tuple[str, ...] = ()
    # False when the loss leaves some parameters without a gradient (DDP must then look for them).
    uses_every_parameter: bool = True
    # Data keys (``DataSection`` fields) the task reads. required: set and existing before any work
    # (evaluation skips those with "train" in the name); optional: checked when set; lazy: read only
    # when a split or an option asks for them, never checked up front (a recipe may name the VQA
    # test-std questions before they are downloaded).
    required_files: tuple[str, ...] = ("features",)
    optional_files: tuple[str, ...] = ()
    lazy_files: tuple[str, ...] = ()
    # The controlled setting's text length, [CLS] and [SEP] included (docs/method.md §6-§7): what the
    # recipes set as data.max_text_len, and what route analysis and the demo use on a manifest.
    text_len: int = 38

    def __init__(self, config: ExperimentConfig, model_config: Optional[ModelConfig] = None,
                 ctx: Optional[DistContext] = None) -> None:
        """Opens the feature store. Without ``model_config`` (route analysis, the demo's chance levels:
        datasets only) the store's feature size is not checked against a model; without ``ctx`` the task
        is a single CPU process."""
        self.config, self.model_config, self.ctx = config, model_config, ctx or DistContext()
        d = config.data
        self.tokenizer = load_tokenizer()
        self.store = open_feature_store(d.path("features"))
        if (model_config is not None and self.store.feat_dim is not None
                and self.store.feat_dim != model_config.region_feat_dim):
            raise ConfigError(
                f"data.features: {self.store.path} has {self.store.feat_dim}-d region features but model "
                f"{model_config.name!r} expects region_feat_dim={model_config.region_feat_dim} "
                f"(set model.overrides.region_feat_dim or use other features)"
            )

    @classmethod
    def data_keys(cls) -> tuple[str, ...]:
        """Every data key the task may read: required, optional, then lazy."""
        return cls.required_files + cls.optional_files + cls.lazy_files

    # -- to implement ----------------------------------------------------------------------------
    def split_files(self, split: str) -> tuple[str, ...]:
        """The data keys (besides ``features``) that ``split`` reads; an unknown split is a ConfigError."""
        raise NotImplementedError

    def dataset(self, split: str) -> Dataset:
        """The samples of ``split`` as evaluation reads them (``heldout``: the held-out training images)."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def build_heads(self, model: VLModel) -> nn.Module:
        raise NotImplementedError

    def step(self, model: nn.Module, heads: nn.Module, batch: Batch, labels: Any) -> StepOutput:
        """One training forward pass.

        ``batch`` must already be validated: the trainer checks it on the host before the copy to the
        device, and the step calls ``model(batch, validate=False)``, because ``Batch.validate`` on device
        tensors makes the host wait for the GPU (docs/performance.md).
        """
        raise NotImplementedError

    def evaluate(self, model: VLModel, heads: nn.Module, split: str, ectx: EvalContext) -> dict[str, float]:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def analysis_split(self, split: str) -> str:
        """The split route analysis reads when asked for ``split`` (VQA under trainval: val -> minival)."""
        return split

    def analysis_dataset(self, split: str) -> Dataset:
        """The samples whose routes ``switchbert routes`` collects: those of :meth:`dataset`, unless a task
        says otherwise (no answers for VQA, the matching pairs for retrieval, testA + testB as RefCOCO+
        ``test``). Call with a split :meth:`analysis_split` returned."""
        return self.dataset(split)

    @property
    def val_split(self) -> str:
        """The split validated after each epoch (and the best checkpoint chosen on): ``eval.val_split``,
        except that with ``data.val_from_train`` the default ``val`` becomes the held-out training images."""
        split = self.config.eval.val_split
        return HELDOUT if self.config.data.val_from_train > 0 and split == "val" else split

    def _check_heldout(self, split: str) -> None:
        if split == HELDOUT and self.config.data.val_from_train <= 0:
            raise ConfigError(f"split {HELDOUT!r} exists only with data.val_from_train > 0 (the fraction of "
                              "training images held out)")

    def best_metric(self) -> tuple[str, bool]:
        """(metric name, higher is better) that selects the best checkpoint."""
        name = self.config.train.best_metric or self.default_best
        if name not in self.metric_names:
            raise ConfigError(f"train.best_metric: task {self.name!r} reports {', '.join(self.metric_names)}; "
                              f"got {name!r}")
        return name, name not in self.lower_is_better

    def save_assets(self, directory: Path) -> None:
        """Writes what evaluation needs besides the weights (VQA: the answer vocabulary)."""

    def load_assets(self, directory: Path) -> None:
        """Reads what ``save_assets`` wrote."""

    def _eval_batches(self, dataset: Dataset, ectx: EvalContext, desc: str, indices: Optional[list[int]] = None):
        """Yields (batch, labels) on device for this process's contiguous share of ``indices``."""
        indices = list(range(len(dataset))) if indices is None else indices
        mine = [indices[i] for i in shard_range(len(indices), ectx.dist)]
        loader = make_dataloader(dataset, ectx.batch_size, sampler=mine, num_workers=self.config.data.num_workers)
        bar = tqdm(loader, desc=desc, unit="batch", disable=not (ectx.progress and ectx.dist.is_main), leave=False)
        for batch, labels in bar:
            yield batch.to(ectx.dist.device), labels.to(ectx.dist.device)


