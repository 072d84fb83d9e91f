"""Conceptual Captions scale, before vs after: building the caption index of 10k, 300k and 2.7M images,
a DataLoader worker's start-up, and the memory each forked worker makes its own.

For each size, a captions file and a fast store of that many tiny records (1 region, 4-d features,
2 classes: the index is what is measured, not the decoding) are written once; then, at each revision
(``--before``, default main before this work; and this tree), in a fresh process:

    build      seconds to build ``CaptionPairsDataset`` (read the JSON, check every id against the
               store, and, after, tokenise every caption and write the index cache; "cached": a fresh
               process that reads the cache instead), and the growth of the process's resident memory
    start-up   seconds from ``iter(DataLoader(num_workers=1))`` to the first batch (fork + first batch)
    worker     the worker's private memory after 20 batches, split: written (Private_Dirty: its copies
               of the parent's pages and its own allocations) and store pages (Private_Clean: the
               LMDB file pages it read, page cache that only it maps; grows with the store, not a copy)
    epoch walk a forked child reads every item's index entries as ``__getitem__`` does (image id,
               caption, store membership) without decoding: the memory it has written afterwards is
               what one worker owns by the end of an epoch (copy-on-read: reading a Python object writes
               its reference count, so the page becomes the worker's own)

    PYTHONPATH=src python benchmarks/bench_data_scale.py [--sizes 10000,300000,2700000] [--before REV]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_compare import BEFORE_DEFAULT, REPO, child_setup, extract_src, load, run_child

WORDS = ("a red cube left of the big blue sphere near green cylinder small metal rubber shiny on top behind "
         "two three man woman dog street city river tree house").split()


def uss_mb(pid: int) -> float:
    """Private (unshared) memory of ``pid`` in MB."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def private_mb(pid: int) -> tuple[float, float]:
    """(Private_Dirty, Private_Clean) of ``pid`` in MB: memory the process wrote (its own copies and
    allocations) vs clean pages only it maps (here: the store's file pages it read, page cache)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out["Private_Dirty"], out["Private_Clean"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(args) -> dict:
    child_setup(args.src)
    import torch

    from switchbert.data import CaptionPairsDataset, load_tokenizer, make_dataloader, open_feature_store

    torch.set_num_threads(1)
    root = Path(args.root)
    out = {"load": load()}
    gc.collect()
    base = rss_mb(os.getpid())
    t0 = time.perf_counter()
    store = open_feature_store(root / "store")
    supported = "index_cache" in inspect.signature(CaptionPairsDataset).parameters
    extra = {"index_cache": root / "captions.index.npz"} if supported else {}
    if supported and not args.use_cache:
        (root / "captions.index.npz").unlink(missing_ok=True)  # parse and tokenise; write the cache
    ds = CaptionPairsDataset(root / "captions.json", store, load_tokenizer(), seed=0, **extra)
    out["build_s"] = time.perf_counter() - t0
    gc.collect()
    out["parent_rss_mb"] = rss_mb(os.getpid()) - base
    dl = make_dataloader(ds, 64, shuffle=True, num_workers=1, seed=0, persistent_workers=True)
    t0 = time.perf_counter()
    it = iter(dl)
    next(it)
    out["startup_s"] = time.perf_counter() - t0
    for _ in range(20):
        next(it)
    pid = dl._iterator._workers[0].pid  # persistent workers: the loader keeps its iterator
    out["worker_uss_mb"] = uss_mb(pid)
    out["worker_dirty_mb"], out["worker_clean_mb"] = private_mb(pid)
    del it, dl
    # The epoch walk, in a forked child: what every item's __getitem__ reads from the index.
    r, w = os.pipe()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        n = len(ds)
        for i in np.random.default_rng(0).permutation(n):  # numpy, not a list of n ints (that would count)
            i = int(i)
            iid = ds.image_ids[i]
            _ = ds.captions[i]
            _ = iid in ds.store
        os.write(w, json.dumps({"uss": uss_mb(os.getpid()), "dirty": private_mb(os.getpid())[0]}).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.waitpid(pid, 0)
    out["walk_s"] = time.perf_counter() - t0
    out["walk_uss_mb"] = json.loads(data)["uss"]
    out["walk_dirty_mb"] = json.loads(data)["dirty"]
    return out


def build(root: Path, n: int) -> None:
    """captions.json and a fast store of ``n`` tiny records."""
    sys.path.insert(0, str(REPO / "src"))
    from switchbert.data import write_store
    from switchbert.data.features import RegionRecord

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [str(1_000_000 + i) for i in range(n)]
    lens = rng.integers(6, 16, n)
    words = rng.integers(0, len(WORDS), int(lens.sum()))
    caps, at = {}, 0
    for iid, k in zip(ids, lens):
        caps[iid] = " ".join(WORDS[j] for j in words[at:at + k])
        at += k
    (root / "captions.json").write_text(json.dumps(caps))
    del caps
    feats, boxes, probs = np.ones((1, 4), np.float32), np.array([[1, 1, 9, 9]], np.float32), np.full((1, 2), 0.5, np.float32)
    write_store(root / "store", (RegionRecord(iid, feats, boxes, 10.0, 10.0, probs) for iid in ids), "fast")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE_DEFAULT)
    ap.add_argument("--sizes", default="10000,300000,2700000")
    ap.add_argument("--dir", default=None, help="keep the data here (default: a temporary directory)")
    ap.add_argument("--reuse-cache", action="store_true",
                    help="skip the first (tokenising) build where --dir already holds an index cache")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--use-cache", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        Path(args.json).write_text(json.dumps(child(args)))
        return
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        before_src = extract_src(args.before, scratch)
        rows = []
        for n in [int(s) for s in args.sizes.split(",")]:
            root = scratch / f"cc{n}"
            if not (root / "store" / "data.mdb").exists():
                t0 = time.perf_counter()
                build(root, n)
                print(f"{n:,} images: captions + store written in {time.perf_counter() - t0:.0f} s", flush=True)
            b = run_child("bench_data_scale.py", before_src, ["--root", str(root)])
            cache_ok = (root / "captions.index.npz").exists() and args.reuse_cache
            a = None if cache_ok else run_child("bench_data_scale.py", REPO / "src", ["--root", str(root)])
            c = run_child("bench_data_scale.py", REPO / "src", ["--root", str(root), "--use-cache"])
            rows.append((n, b, a, c))
            print(f"  before {b}\n  after  {a}\n  cached {c}", flush=True)
        print(f"\nbefore = {args.before}; after = this tree, first build (parses and tokenises the captions, "
              f"writes the index cache); cached = this tree, a fresh process reading the cache. Load averages: "
              f"{', '.join(r['load'] for row in rows for r in row[1:])}")
        keys = (("build_s", "build s", 1), ("parent_rss_mb", "parent MB", 0), ("startup_s", "start-up s", 2),
                ("worker_dirty_mb", "worker written MB", 0), ("worker_clean_mb", "worker store pages MB", 0),
                ("walk_dirty_mb", "epoch-walk written MB", 0))
        print(f"{'images':>10} | " + " | ".join(f"{label:>23}" for _, label, _ in keys))
        print(f"{'':>10} | " + " | ".join(f"{'before  after  cached':>23}" for _ in keys))
        for n, b, a, c in rows:
            a = a or {}
            print(f"{n:>10,} | " + " | ".join(f"{b[k]:>9.{d}f}{a.get(k, float('nan')):>7.{d}f}{c[k]:>7.{d}f}"
                                              for k, _, d in keys))
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
