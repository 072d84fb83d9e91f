"""Data-layer throughput: feature-store random access and pretraining batches per second.

1. Random access, one core: the same images (36 regions x 2048-d features, pixel boxes, optional 1601-way
   class distribution) written to each store; ids read in a random order with ``store.get`` (decode to
   float32 arrays, validated). "warm": after one warm-up pass, every store reads from the page cache
   (decoding cost). "cold": right after evicting the store's files from the page cache with
   posix_fadvise (decoding plus I/O; a dataset larger than RAM behaves like this).
   Our ``fast`` store against the formats users arrive with (VOLTA raw-numpy LMDB, ViLBERT base64 LMDB,
   bottom-up H5).
2. Pretraining: the synthetic benchmark (2048-d, 1601 classes) through CaptionPairsDataset (tokenise,
   MLM/MRC/ITM masking, collate) and make_dataloader, batches per second for several worker counts.

    PYTHONPATH=src python benchmarks/bench_data.py [--images 1000] [--reads 2000] [--repeats 5] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from switchbert.data import CaptionPairsDataset, load_tokenizer, make_dataloader, open_feature_store, write_store
from switchbert.data.features import RegionRecord
from switchbert.data.synth import generate


def _records(n: int, regions: int, feat_dim: int, num_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        xy = rng.uniform(0, 400, (regions, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 200, (regions, 2))], 1).astype(np.float32)
        feats = np.maximum(rng.standard_normal((regions, feat_dim), dtype=np.float32), 0)
        probs = rng.dirichlet(np.ones(num_classes), regions).astype(np.float32) if num_classes else None
        yield RegionRecord(str(100000 + i), feats, boxes, 640.0, 480.0, probs)


def bench_store(path: Path, reads: int, seed: int = 0) -> float:
    """Images per second of random-order ``get`` on one core (warm page cache)."""
    store = open_feature_store(path)
    ids = store.ids()
    for iid in ids:  # warm-up: every store reads from memory, so we compare decoding, not the disk
        store.get(iid)
    order = np.random.default_rng(seed).choice(len(ids), reads)
    t0 = time.perf_counter()
    for j in order:
        r = store.get(ids[j])
    dt = time.perf_counter() - t0
    assert r.features.dtype == np.float32
    return reads / dt


def _evict(path: Path) -> None:
    """Drops a store's files from the page cache (posix_fadvise; no root needed)."""
    files = [path / "data.mdb"] if path.is_dir() else [path]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def bench_store_cold(path: Path, reads: int, seed: int = 0) -> float:
    """Images per second of random-order ``get`` right after evicting the store from the page cache."""
    store = open_feature_store(path)
    ids = store.ids()
    store.close()
    _evict(path)
    store = open_feature_store(path)
    order = np.random.default_rng(seed + 1000).choice(len(ids), reads, replace=False)
    t0 = time.perf_counter()
    for j in order:
        store.get(ids[j])
    dt = time.perf_counter() - t0
    store.close()
    return reads / dt


def bench_stores(paths: dict[str, Path], reads: int, repeats: int) -> dict[str, float]:
    """Median images/s per store over ``repeats`` rounds, the stores interleaved within each round so
    that machine noise (frequency, neighbours) hits them alike."""
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(repeats):
        for k, p in paths.items():
            rates[k].append(bench_store(p, reads, seed=r))
    return {k: float(np.median(v)) for k, v in rates.items()}


def bench_pretrain(root: Path, batch_size: int, workers: list[int], batches: int) -> list[tuple[int, float]]:
    store = open_feature_store(root / "features.lmdb")
    ds = CaptionPairsDataset(root / "cc" / "caption_train.json", store, load_tokenizer(), seed=0)
    out = []
    for w in workers:
        dl = make_dataloader(ds, batch_size, shuffle=True, num_workers=w, seed=0, drop_last=True,
                             persistent_workers=False)
        it = iter(dl)
        next(it)  # start-up (worker spawn) excluded
        t0 = time.perf_counter()
        n = 0
        for _ in range(batches):
            try:
                next(it)
            except StopIteration:
                break
            n += 1
        out.append((w, n / (time.perf_counter() - t0)))
        del it
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000, help="images per store for random access")
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold-reads", type=int, default=300, help="reads after evicting the page cache")
    ap.add_argument("--synth-images", type=int, default=3000, help="synthetic images for the pretraining run")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temporary one)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_data_"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        print(f"feature-store random access: {args.images} images of 36 x 2048, {args.reads} random reads, one core")
        for label, classes in (("features + boxes", 0), ("features + boxes + cls_prob (1601)", 1601)):
            paths, sizes = {}, {}
            for fmt in ("fast", "volta", "volta-b64", "h5"):
                path = scratch / f"{fmt}-{classes}{'.h5' if fmt == 'h5' else ''}"
                write_store(path, _records(args.images, 36, 2048, classes), fmt)
                size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
                paths[fmt], sizes[fmt] = path, size / args.images / 1024
            rates = bench_stores(paths, args.reads, args.repeats)
            cold = {k: float(np.median([bench_store_cold(p, args.cold_reads, r) for r in range(3)]))
                    for k, p in paths.items()}
            for path in paths.values():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            print(f"\n  {label} (median of {args.repeats} interleaved rounds)")
            print(f"  {'store':<12}{'warm img/s':>11}{'fast is':>9}{'cold img/s':>12}{'fast is':>9}{'KiB/image':>11}")
            for fmt, rate in rates.items():
                print(f"  {fmt:<12}{rate:>11,.0f}{rates['fast'] / rate:>8.2f}x{cold[fmt]:>12,.0f}"
                      f"{cold['fast'] / cold[fmt]:>8.2f}x{sizes[fmt]:>11,.0f}")

        root = scratch / "synth"
        t0 = time.perf_counter()
        generate(root, args.synth_images, seed=0)
        print(f"\nsynthetic benchmark: {args.synth_images} images (2048-d, 1601 classes) in "
              f"{time.perf_counter() - t0:.1f} s")
        workers = [int(w) for w in args.workers.split(",")]
        print(f"pretraining batches (batch {args.batch_size}, MLM+MRC+ITM, text <= 38, cpu count {os.cpu_count()})")
        print(f"  {'workers':<10}{'batches/s':>10}{'samples/s':>11}")
        for w, rate in bench_pretrain(root, args.batch_size, workers, args.batches):
            print(f"  {w:<10}{rate:>10.2f}{rate * args.batch_size:>11,.0f}")
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
