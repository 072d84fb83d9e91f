"""Cells run ``jobs`` at a time, each in a fresh (spawned) process with an equal share of the threads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch

from switchbert.demo.pipeline import Cell, CellResult, run_cell

# A worker process's channel back to the parent (set by _worker_init).
_EVENTS: Any = None


def default_jobs(pipelines: int) -> int:
    """Parallel (model, seed) pipelines when ``--jobs`` is not given: one per available CPU core, at
    most one per pipeline. Each pipeline runs one thread per core it gets; on 2 cores two pipelines
    at once take 1.1-1.3x the time of one alone (measured, BENCHMARKS.md "The demo")."""
    return max(1, min(pipelines, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1)))


def _worker_init(events, threads: int) -> None:
    global _EVENTS
    _EVENTS = events
    torch.set_num_threads(threads)


def _run_in_worker(index: int, cell: Cell, manifest: Mapping[str, Any], resume: bool) -> CellResult:
    return run_cell(cell, manifest, lambda event, k: _EVENTS.put((index, event, k)), resume=resume)


def run_parallel(cells: Sequence[Cell], manifest: Mapping[str, Any], on_event: Callable[[int, str, int], Any],
                 jobs: int, resume: bool = False) -> list[CellResult]:
    """Runs the cells ``jobs`` at a time in spawned processes; their results in the order of ``cells``.

    ``on_event(cell index, "start" | "finish" | "skip", stage index)`` is called here, in this process, as the
    workers' stages start and finish. The first failure is raised here: the cells not yet started are
    cancelled, and those running finish first (a process pool cannot stop a running task; Ctrl-C
    reaches the workers directly, since they share the terminal's process group).
    """
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")  # not fork: this process's OpenMP threads and locks
    events = ctx.Queue()
    threads = max(1, torch.get_num_threads() // jobs)
    done: dict[int, CellResult] = {}
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(events, threads)) as pool:
        futures = {pool.submit(_run_in_worker, i, cell, manifest, resume): i for i, cell in enumerate(cells)}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                _drain(events, on_event)
                for f in finished:
                    done[futures[f]] = f.result()  # raises the worker's error
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        _drain(events, on_event)
    return [done[i] for i in range(len(cells))]


def _drain(events, on_event: Callable[[int, str, int], Any]) -> None:
    import queue

    while True:
        try:
            index, event, k = events.get_nowait()
        except queue.Empty:
            return
        on_event(index, event, k)
