"""Distributed training helpers: process-group setup from ``torchrun``'s environment, the data sampler,
gathering evaluation outputs, and rank-0-only writing.

One process per device. ``torchrun --nproc_per_node N`` sets RANK, LOCAL_RANK and WORLD_SIZE; without
them the process runs alone. NCCL on GPU, gloo on CPU.

Two rules make W processes train like one process with the same global batch:

* Random streams per rank (``rank_seed``). Every rank builds the model from the same seed (identical
  initial weights; DDP broadcasts rank 0's anyway), then ranks r > 0 reseed torch, numpy and ``random``
  with ``rank_seed(seed, r)``, so their dropout masks and Gumbel noise are their own draws and not
  copies of rank 0's. Rank 0 keeps the single-process stream. Data order and pretraining masks do not
  depend on these streams (they are functions of (seed, epoch, index)).
* Token-mean losses over the global batch (``global_count_denominator``). MLM and MRC average over
  target tokens; a per-process mean weights a rank's tokens by 1 / (its own count), so W processes
  would differ from one (and a rank without targets would halve MRC). Each rank divides its sum by
  (global count / W): DDP's gradient mean then equals the gradient of sum / global count.
  Gradient accumulation still normalises each micro-batch step by that step's global count. In one
  process no collective runs (the count is the batch's own), so ``train.compile`` traces the step
  whole; with W > 1 the all_reduce of two numbers sits inside the compiled step.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistContext:
    """Where this process sits.

    Attributes:
        rank: global rank (0 writes files and shows progress).
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        device: this process's device.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process.

    Args:
        device: "auto" (CUDA when available), "cpu" or "cuda".
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda but CUDA is not available")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
        # One group per process, shared by every command the process runs (train, then evaluate).
        atexit.register(_destroy)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``values`` over processes (a copy; the input is unchanged)."""
    if not ctx.distributed:
        return values
    out = values.detach().to(ctx.device, copy=True)  # NCCL reduces device tensors only
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / ctx.world_size).to(values.device)


RANK_SEED_STRIDE = 1_000_003
"""Distance between the seeds of consecutive ranks (a prime, so rank seeds do not collide with the
small offsets the data code adds to the run's seed)."""


def rank_seed(seed: int, rank: int) -> int:
    """The torch/numpy/random seed of ``rank``'s training stream: ``seed`` for rank 0 (a single process
    draws exactly what it always did), ``seed + rank * RANK_SEED_STRIDE`` for the others."""
    return seed + rank * RANK_SEED_STRIDE


def global_count_denominator(counts: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """What each process divides its loss sums by so that DDP's gradient mean is a global token mean.

    Args:
        counts: (P,) float, this process's target counts (e.g. [MLM tokens, MRC regions]), no gradient.
        ctx: the process group.

    Returns:
        (P,) max(global count, 1) / world_size (one all_reduce; no host sync). In one process that is
        max(count, 1), the plain mean; with W processes, W x (local sum / returned value) averaged over
        ranks is sum over all ranks / global count, and a rank without targets contributes 0 to the sum.
    """
    counts = counts.detach().float()
    if not ctx.distributed:
        return counts.clamp(min=1.0)
    total = counts.to(ctx.device, copy=True)  # NCCL reduces device tensors only
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total.clamp(min=1.0) / ctx.world_size).to(counts.device)


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every process's ``obj``, in rank order (pickled; for evaluation outputs, not for large tensors)."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def epoch_permutation(indices: Sequence[int], seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The training order of one epoch: a permutation of ``indices`` seeded by (seed, epoch)."""
    if not shuffle:
        return list(indices)
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(indices), generator=g).tolist()
    return [indices[i] for i in order]


class ShardedSampler(Sampler[int]):
    """This process's share of one epoch's global order, optionally resuming part-way.

    The epoch's order is the same permutation whatever the number of processes, and rank r takes
    positions r, r + W, r + 2W, ...: a global batch of B consecutive positions is split into W
    micro-batches of B / W, so W processes see exactly the samples one process would (DDP equivalence).
    Only ``num_steps * global_batch`` positions are used: the last incomplete global batch is dropped.

    Args:
        indices: the dataset indices to draw from (a fraction of the dataset, or all of it).
        global_batch: samples per optimizer step, over all processes.
        seed, epoch: fix the permutation.
        rank, world_size: this process's place.
        skip: local samples of this epoch already consumed (a resumed run skips them).
        shuffle: permute (training) or keep order.
    """

    def __init__(self, indices: Sequence[int], global_batch: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, skip: int = 0, shuffle: bool = True) -> None:
        self.indices, self.global_batch = list(indices), global_batch
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.skip, self.shuffle = skip, shuffle

    @property
    def steps_per_epoch(self) -> int:
        return len(self.indices) // self.global_batch

    def _local(self) -> list[int]:
        order = epoch_permutation(self.indices, self.seed, self.epoch, self.shuffle)
        used = order[: self.steps_per_epoch * self.global_batch]
        return used[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._local()[self.skip :])

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch * self.global_batch // self.world_size - self.skip)


def shard_range(n: int, ctx: DistContext) -> range:
    """A contiguous share of ``range(n)`` for evaluation (contiguous keeps image-major pairs together)."""
    per = -(-n // ctx.world_size)
    return range(min(n, ctx.rank * per), min(n, (ctx.rank + 1) * per))


def rank0_only(ctx: DistContext, fn, *args: Any, **kwargs: Any) -> Optional[Any]:
    """Calls ``fn`` on rank 0 only (file writes)."""
    return fn(*args, **kwargs) if ctx.is_main else None
