"""Collation helpers, the label base class, and the DataLoader factory.

``make_dataloader`` returns a :class:`SummarizingDataLoader`: it yields what the dataset's collate
returns and, under ``skip_bad``, says once per dataset how many items were left out and once per pass
how many records were skipped, per reason (counted in DataLoader workers too). See docs/data.md
(Guarantees).

Dimension legend: B batch, T text tokens (padded to the longest in the batch), N regions (padded to
the most in the batch, at most 36), F feature size, C detector classes.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from switchbert.batch import Batch
from switchbert.data.errors import BadItemPolicy, DataError, DataWarning, format_counts
from switchbert.data.regions import BOX_DIM, Regions
from switchbert.data.tokenizer import PAD_ID


class TensorFields:
    """Mixin for label dataclasses: ``to`` and ``pin_memory`` over their tensor fields."""

    def to(self, device, non_blocking: bool = False):
        return replace(self, **{f.name: v.to(device, non_blocking=non_blocking)
                                for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor)})

    def pin_memory(self):
        return replace(self, **{f.name: v.pin_memory()
                                for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor)})


def pad_text(token_ids: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """(B,) variable-length id arrays -> ids (B, T) long padded with [PAD], mask (B, T) bool."""
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    ids = np.full((len(token_ids), int(lengths.max())), PAD_ID, dtype=np.int64)
    for i, t in enumerate(token_ids):  # numpy rows: a torch.as_tensor per row costs ~4x more
        ids[i, : len(t)] = t
    mask = np.arange(ids.shape[1]) < lengths[:, None]
    return torch.from_numpy(ids), torch.from_numpy(mask)


def pad_labels(labels: Sequence[np.ndarray], length: int, fill: int) -> Tensor:
    """(B,) variable-length int arrays -> (B, length) long padded with ``fill``."""
    out = np.full((len(labels), length), fill, dtype=np.int64)
    for i, t in enumerate(labels):
        out[i, : len(t)] = t
    return torch.from_numpy(out)


def new_tensor(shape: Sequence[int], dtype: torch.dtype, zero: bool = True) -> Tensor:
    """A CPU tensor for a collated batch; in a DataLoader worker, allocated in shared memory.

    A worker hands a batch to the main process by moving every tensor into shared memory, a second
    copy of the whole batch. Collating straight into shared memory (as torch's ``default_collate``
    does) makes that move free (BENCHMARKS.md, "Input pipeline").

    Args:
        zero: fill with zeros; False = uninitialised (the caller writes every element).
    """
    if torch.utils.data.get_worker_info() is None:
        return torch.zeros(shape, dtype=dtype) if zero else torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape, dtype=np.int64))
    proto = torch.empty(0, dtype=dtype)
    out = proto.new(proto._typed_storage()._new_shared(numel)).view(tuple(shape))
    return out.zero_() if zero else out


def pad_regions(regions: Sequence[Regions], feat_dim: Optional[int] = None,
                zeroed: Optional[Sequence[Optional[np.ndarray]]] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Stacks regions, zero-padding to the most regions in the batch.

    Args:
        zeroed: per sample, None or (n,) bool rows whose features are set to 0 in the batch (MRC's
            masked regions, when the sample's features still view the store's pages).

    Returns:
        feats (B, N, F) float16 when every sample's features are float16 (a float16 store; the model
        widens them on the device), else float32; boxes (B, N, 5) float32, mask (B, N) bool,
        boxes_px (B, N, 4) float32.
    """
    B = len(regions)
    N = max(r.num_regions for r in regions)
    F = feat_dim or next((r.features.shape[1] for r in regions if r.features.ndim == 2), 0)
    half = all(r.features.dtype == np.float16 for r in regions)
    feats_t = new_tensor((B, N, F), torch.float16 if half else torch.float32, zero=False)
    feats = feats_t.numpy()
    boxes = np.zeros((B, N, BOX_DIM), dtype=np.float32)
    boxes_px = np.zeros((B, N, 4), dtype=np.float32)
    mask = np.zeros((B, N), dtype=bool)
    for i, r in enumerate(regions):
        n = r.num_regions
        feats[i, :n], boxes[i, :n], boxes_px[i, :n], mask[i, :n] = r.features, r.boxes, r.boxes_px, True
        feats[i, n:] = 0  # only the padding is zeroed: the rest is written once
        if zeroed is not None and zeroed[i] is not None and zeroed[i].any():
            feats[i, :n][zeroed[i]] = 0
    return feats_t, torch.from_numpy(boxes), torch.from_numpy(mask), torch.from_numpy(boxes_px)


def make_batch(token_ids: Sequence[np.ndarray], regions: Sequence[Regions],
               zeroed: Optional[Sequence[Optional[np.ndarray]]] = None) -> tuple[Batch, Tensor]:
    """A :class:`Batch` from per-sample ids and regions (``zeroed``: see :func:`pad_regions`); also
    returns boxes_px (B, N, 4)."""
    ids, tmask = pad_text(token_ids)
    feats, boxes, rmask, boxes_px = pad_regions(regions, zeroed=zeroed)
    return Batch(ids, tmask, feats, boxes, rmask), boxes_px


def drop_skipped(examples: Sequence) -> list:
    """Removes the ``None`` that datasets return for items skipped under ``skip_bad``.

    Not warned per batch: the loader of :func:`make_dataloader` counts the skips and prints one
    summary per pass (the first few items are listed by the dataset's policy).
    """
    return [e for e in examples if e is not None]


@dataclass
class _Failure:
    """A DataError raised while reading an item in a worker, carried to the main process intact
    (torch re-raises worker errors as a RuntimeError holding the worker's traceback text)."""

    error: DataError


@dataclass
class _ReadBatch:
    """A batch that the dataset's ``read_batch`` collated as it read it, and how many items it skipped."""

    value: Any
    skipped: int


class _ReadGuard(Dataset):
    """Wraps a dataset so that a DataError from reading travels as a value (see _Failure).

    A dataset with ``read_batch(indices)`` (equal to ``collate([dataset[i] for i in indices])``) is
    read a batch at a time through torch's ``__getitems__``: it can copy each image's features once,
    from the store straight into the batch (``CaptionPairsDataset``; BENCHMARKS.md, "Input pipeline").
    """

    def __init__(self, dataset: Dataset, read_batches: bool = False) -> None:
        self.dataset = dataset
        self.read_batch = getattr(dataset, "read_batch", None) if read_batches else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except DataError as err:
            return _Failure(err)

    def __getitems__(self, indices: list) -> Union[list, _ReadBatch]:
        read_batch = self.read_batch
        if read_batch is None:
            return [self[i] for i in indices]
        policy = getattr(self.dataset, "policy", None)
        before = policy.skipped if isinstance(policy, BadItemPolicy) else 0
        try:
            value = read_batch(indices)
        except DataError as err:
            return [_Failure(err)]
        return _ReadBatch(value, (policy.skipped - before) if isinstance(policy, BadItemPolicy) else 0)


@dataclass
class _Counted:
    """One collated batch plus what reading it found: items asked for, items skipped, and the
    policy's drained skip counts (from the process that read them)."""

    value: Any
    size: int
    skipped: int
    drained: Optional[tuple] = None
    error: Optional[DataError] = None

    def pin_memory(self) -> "_Counted":
        if self.value is None:
            return self
        # The DataLoader's pin-memory thread calls this on what the collate returned; pin the batch and
        # labels inside as it would have without the wrapper.
        from torch.utils.data._utils.pin_memory import pin_memory

        return replace(self, value=pin_memory(self.value))


class _CountingCollate:
    """The dataset's collate, plus the skip bookkeeping of one batch (runs where the batch is read)."""

    def __init__(self, collate: Callable, dataset: Dataset) -> None:
        self.collate, self.dataset = collate, dataset

    def __call__(self, examples: Union[list, _ReadBatch]) -> _Counted:
        policy = getattr(self.dataset, "policy", None)
        if isinstance(examples, _ReadBatch):  # read and collated in one (_ReadGuard.__getitems__)
            drained = policy.drain() if isinstance(policy, BadItemPolicy) else None
            size = len(examples.value[0].text_ids) + examples.skipped
            return _Counted(examples.value, size, examples.skipped, drained)
        failure = next((e for e in examples if isinstance(e, _Failure)), None)
        if failure is not None:
            return _Counted(None, len(examples), 0, error=failure.error)
        skipped = sum(e is None for e in examples)
        try:
            value = self.collate(examples)
        except DataError as err:  # e.g. every item of the batch skipped: one line in the main process too
            return _Counted(None, len(examples), skipped, error=err)
        drained = policy.drain() if isinstance(policy, BadItemPolicy) else None
        return _Counted(value, len(examples), skipped, drained)


def _rank() -> tuple[int, int]:
    """(rank, world size) of this process, (0, 1) outside torch.distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _dataset_name(dataset: Dataset, policy: Optional[BadItemPolicy]) -> str:
    name = getattr(dataset, "path", None)
    if name:
        return str(name)
    sources = ", ".join(Path(p).name for p in (policy.sources if policy else [])[:2])
    return f"{type(dataset).__name__} ({sources})" if sources else type(dataset).__name__


class SummarizingDataLoader(DataLoader):
    """A DataLoader that says how much of the data each pass used.

    Yields exactly what the dataset's collate returns. Once per dataset object (at its first pass) it
    warns how many items the dataset holds and how many were left out as bad when it was built; at
    the end of every pass with skipped records it warns the count per reason and how many items were
    used. Items skipped inside DataLoader workers are counted too (the batch carries them back). A
    DataError raised by a worker is re-raised here as itself, not as torch's RuntimeError.
    """

    def __init__(self, dataset: Dataset, *args, read_batches: bool = False, **kwargs) -> None:
        super().__init__(_ReadGuard(dataset, read_batches), *args, **kwargs)
        self.source = dataset

    def __iter__(self):
        ds = self.source
        policy = getattr(ds, "policy", None)
        policy = policy if isinstance(policy, BadItemPolicy) else None
        if policy is not None:
            self._report_build(ds, policy)
            policy.drain()  # skips found before this pass (building the dataset) are not this pass's
        try:
            total_batches = len(self)
        except TypeError:
            total_batches = -1
        tally: Counter = Counter()
        items = skipped = batches = 0
        finished = False
        try:
            for out in super().__iter__():
                if out.error is not None:
                    raise out.error
                batches += 1
                items += out.size
                skipped += out.skipped
                if out.drained is not None and policy is not None:
                    policy.absorb(out.drained)
                    tally.update(out.drained[1])
                if batches == total_batches:  # before the last yield: the consumer may never ask again
                    finished = True
                    self._report_pass(ds, policy, items, skipped, tally, complete=True)
                yield out.value
        finally:
            if not finished and skipped:
                self._report_pass(ds, policy, items, skipped, tally, complete=False)

    @staticmethod
    def _report_build(ds: Dataset, policy: BadItemPolicy) -> None:
        if policy.build_reported or not policy.skipped:
            return
        policy.build_reported = True
        if _rank()[0] != 0:
            return  # every process builds the same dataset: one report is enough
        used = len(ds)
        warnings.warn(f"{_dataset_name(ds, policy)}: {used:,} items used; {policy.skipped:,} left out as bad when "
                      f"it was read ({format_counts(policy.counts)})", DataWarning, stacklevel=3)

    @staticmethod
    def _report_pass(ds: Dataset, policy: Optional[BadItemPolicy], items: int, skipped: int, tally: Counter,
                     complete: bool) -> None:
        if not skipped:
            return
        n = 0
        if policy is not None:
            policy.passes += 1
            n = policy.passes
        reasons = format_counts(tally) if tally else "reasons not recorded"
        where = "pass" if complete else "partial pass"
        rank, world = _rank()
        if world > 1:
            where = f"rank {rank}'s share, {where}"
        warnings.warn(f"{_dataset_name(ds, policy)}, {where} {n}: {skipped:,} of {items:,} items skipped as bad "
                      f"({reasons}); {items - skipped:,} used", DataWarning, stacklevel=3)


class PermutationSampler(Sampler[int]):
    """``RandomSampler``'s order (the same permutations from the same generator), without its list.

    ``RandomSampler`` turns each epoch's permutation into a Python list of n ints (at 2.7M images,
    ~110 MB built in the main process after the workers were forked). Every page of it the main
    process writes was shared with the workers until then, so each worker keeps the old copy: memory
    per worker grows with the dataset (BENCHMARKS.md, "Input pipeline at Conceptual Captions
    scale"). Here the permutation stays one int64 tensor and indices are handed out one at a time.

    Args:
        n: the dataset's length.
        generator: the DataLoader's generator (drawn exactly as ``RandomSampler`` draws it, so a run
            shuffles as it did with ``RandomSampler`` and the same seed).
    """

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator = int(n), generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.generator).numpy()
        for i in perm:
            yield int(i)
        # RandomSampler draws a second permutation for its (empty) remainder once the first is used up;
        # drawing it too keeps the generator, and so every later epoch, where it would have been.
        torch.randperm(self.n, generator=self.generator)


def _worker_init(worker_id: int) -> None:
    # Masks come from per-sample generators (masking.sample_rng); this only keeps torch/numpy global
    # state distinct per worker for any user code that draws from it.
    info = torch.utils.data.get_worker_info()
    np.random.seed(info.seed % 2**32)


def make_dataloader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
    sampler: Optional[Sampler] = None,
    drop_last: bool = False,
    collate_fn: Optional[Callable] = None,
    persistent_workers: bool = False,
    prefetch_factor: Optional[int] = None,
) -> DataLoader:
    """A DataLoader over one of this package's datasets.

    Args:
        dataset: a dataset with a ``collate`` method (used unless ``collate_fn`` is given).
        shuffle: shuffle with a generator seeded by ``seed`` (ignored when ``sampler`` is given, e.g. a
            ``DistributedSampler``; call its ``set_epoch`` and the dataset's ``set_epoch`` each epoch).
            The order is ``RandomSampler``'s, drawn by :class:`PermutationSampler` (no list of n ints).
        pin_memory: pin batches and labels (both implement ``pin_memory``).

    Returns:
        A DataLoader yielding ``(Batch, labels)``.
    """
    collate = collate_fn or getattr(dataset, "collate", None)
    if collate is None:
        raise ValueError(f"{type(dataset).__name__} has no collate method; pass collate_fn")
    collate = _CountingCollate(collate, dataset)
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=_worker_init, persistent_workers=persistent_workers)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    if shuffle and sampler is None:
        sampler = PermutationSampler(len(dataset), generator)
    return SummarizingDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=collate,
        generator=generator,
        # the dataset's own batch reader (one copy of the features) where it has one and its collate is used
        read_batches=collate_fn is None,
        **kwargs,
    )
