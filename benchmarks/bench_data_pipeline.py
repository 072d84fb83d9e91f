"""Input pipeline, before vs after, side by side: bytes per sample and samples/s per loader worker.

One run builds a store of realistic records (36 regions x 2048-d features, 1601-way class distribution,
float16 in our fast store) for the synthetic benchmark's images, then measures the library at two
revisions in separate processes (``--before``, default: main before this work; and this working tree):

1. Bytes per sample: the tensors of one collated (Batch, labels) of each task, divided by its samples
   (pretraining, VQA, retrieval training (4 candidates per caption), RefExp).
2. Pretraining samples/s through ``make_dataloader`` at batch 256 with 0, 1 and 2 worker processes (and
   VQA fine-tuning batches with 0 and 1)
   (persistent workers, start-up and one warm-up batch excluded), and the stage costs in the main
   process (read + corrupt = ``__getitem__``, collate, and the move into shared memory that a worker
   pays to hand a batch over).
3. The share of an H200 pretraining step (28 ms at batch 256, BERT-base, 38 + 37 tokens) that one
   worker's batch costs, and how many workers one H200 needs.

    PYTHONPATH=src python benchmarks/bench_data_pipeline.py [--before REV] [--images 2000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np

from bench_compare import BEFORE_DEFAULT, REPO, child_setup, extract_src, load, ratio, run_child

H200_STEP_S = 0.028
"""A BERT-base pretraining step at batch 256 on an H200 (issue measurement: 28-38 ms)."""


# ------------------------------------------------------------------------------------------- child
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def tensor_bytes(obj) -> int:
    """Bytes of every tensor reachable through dataclass fields, tuples and lists."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if is_dataclass(obj):
        return sum(tensor_bytes(getattr(obj, f.name)) for f in fields(obj))
    if isinstance(obj, (tuple, list)):
        return sum(tensor_bytes(x) for x in obj)
    return 0


def child(args) -> dict:
    child_setup(args.src)
    from multiprocessing.reduction import ForkingPickler

    import torch
    import torch.multiprocessing  # noqa: F401 - registers the tensor reductions (shared memory)

    from switchbert.data import (CaptionPairsDataset, RefCOCODataset, RetrievalTrainDataset, VQADataset,
                                 build_answer_vocab, load_tokenizer, make_dataloader, open_feature_store)

    torch.set_num_threads(1)
    root = Path(args.root)
    store = open_feature_store(root / "features36.lmdb")
    tok = load_tokenizer()
    out: dict = {"load_start": load()}
    B = args.batch_size

    # 1. bytes per sample
    cc = CaptionPairsDataset(root / "cc" / "caption_train.json", store, tok, seed=0)
    vqa_ann = [root / "vqa" / "v2_mscoco_train2014_annotations.json"]
    vqa = VQADataset(root / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json", vqa_ann[0], store, tok,
                     build_answer_vocab(vqa_ann))
    ret = RetrievalTrainDataset(root / "flickr30k" / "train.jsonl", store, tok, cache_path=None)
    ref = RefCOCODataset(root / "refcoco+" / "refs(unc).p", root / "refcoco+" / "instances.json", store, tok, "train")
    sizes = {}
    for name, ds, n in (("pretrain", cc, B), ("vqa", vqa, B), ("retrieval", ret, B // 4), ("refexp", ref, B)):
        idx = range(min(n, len(ds)))
        value = ds.collate([ds[i] for i in idx])
        sizes[name] = tensor_bytes(value) / len(idx)
    out["bytes_per_sample"] = sizes
    batch = cc.collate([cc[i] for i in range(B)])
    out["regions_per_image"] = float(batch[0].region_mask.sum(1).float().mean())

    # 2a. stage costs in this process (median of 3)
    get_s, coll_s, shm_s = [], [], []
    for r in range(3):
        t0 = time.perf_counter()
        ex = [cc[(r * B + i) % len(cc)] for i in range(B)]
        t1 = time.perf_counter()
        value = cc.collate(ex)
        t2 = time.perf_counter()
        ForkingPickler.dumps(value)  # what a worker does to hand the batch over: tensors into shared memory
        t3 = time.perf_counter()
        get_s.append(t1 - t0), coll_s.append(t2 - t1), shm_s.append(t3 - t2)
    out["stage_us_per_sample"] = {"getitem": float(np.median(get_s)) / B * 1e6,
                                  "collate": float(np.median(coll_s)) / B * 1e6,
                                  "to_shared_memory": float(np.median(shm_s)) / B * 1e6}

    # 2b. samples/s through the DataLoader: pretraining, and VQA fine-tuning (0 and 1 worker)
    rates, cpu_per_sample = {}, {}
    settings = [(str(w), cc, w) for w in args.workers] + [(f"vqa{w}", vqa, w) for w in args.workers if w < 2]
    for key, ds, w in settings:
        dl = make_dataloader(ds, B, shuffle=True, num_workers=w, seed=0, drop_last=True, persistent_workers=w > 0)

        def endless():
            while True:
                yield from dl

        it = endless()
        next(it)
        next(it)  # start-up and one warm batch excluded
        pids = [os.getpid()] + [p.pid for p in getattr(dl, "_iterator", None)._workers] if w else [os.getpid()]
        cpu0 = [cpu_seconds(p) for p in pids]
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        rates[key] = args.batches * B / (time.perf_counter() - t0)
        cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
        # CPU seconds per sample, main process and workers: on a shared 2-core machine the wall rate of
        # two workers is capped by the cores left free; the CPU cost says what each worker delivers.
        cpu_per_sample[key] = {"main": cpu[0] / (args.batches * B), "workers": sum(cpu[1:]) / (args.batches * B)}
        del it, dl
    out["samples_per_s"] = rates
    out["cpu_us_per_sample"] = {w: {k: v * 1e6 for k, v in d.items()} for w, d in cpu_per_sample.items()}
    out["load_end"] = load()
    return out


# ------------------------------------------------------------------------------------------ driver
def build_root(root: Path, images: int) -> None:
    """The synthetic benchmark's files, plus ``features36.lmdb``: 36 regions per image, 2048-d, 1601 classes."""
    from switchbert.data import open_feature_store, write_store
    from switchbert.data.features import RegionRecord
    from switchbert.data.synth import generate

    generate(root, images, seed=0, questions_per_image=2)
    ids = open_feature_store(root / "features.lmdb").ids()
    rng = np.random.default_rng(0)

    def records():
        for iid in ids:
            xy = rng.uniform(0, 300, (36, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(20, 300, (36, 2))], 1).astype(np.float32)
            feats = np.maximum(rng.standard_normal((36, 2048), dtype=np.float32), 0)
            logits = rng.standard_normal((36, 1601), dtype=np.float32) * 3
            probs = np.exp(logits - logits.max(1, keepdims=True))
            yield RegionRecord(iid, feats, boxes, 640.0, 640.0, probs / probs.sum(1, keepdims=True))

    write_store(root / "features36.lmdb", records(), "fast")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE_DEFAULT, help="git revision to compare against")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=6, help="timed batches per worker setting")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=2, help="before/after rounds, interleaved; the best is kept")
    ap.add_argument("--dir", default=None, help="keep the data here (default: a temporary directory)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.workers = [int(w) for w in str(args.workers).split(",")]
    if args.child:
        Path(args.json).write_text(json.dumps(child(args)))
        return
    sys.path.insert(0, str(REPO / "src"))
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        root = scratch / "data"
        if not (root / "features36.lmdb" / "data.mdb").exists():
            t0 = time.perf_counter()
            build_root(root, args.images)
            print(f"data: {args.images} synthetic images, 36 regions x 2048-d + 1601 classes ({time.perf_counter() - t0:.0f} s)")
        before_src = extract_src(args.before, scratch)
        child_args = ["--root", str(root), "--batch-size", str(args.batch_size), "--batches", str(args.batches),
                      "--workers", ",".join(map(str, args.workers))]
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.rounds):
            runs["before"].append(run_child("bench_data_pipeline.py", before_src, child_args))
            runs["after"].append(run_child("bench_data_pipeline.py", REPO / "src", child_args))
        report(args, runs)
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def report(args, runs: dict[str, list[dict]]) -> None:
    b, a = runs["before"][0], runs["after"][0]
    best = {k: {w: max(r["samples_per_s"][w] for r in v) for w in v[0]["samples_per_s"] if not w.startswith("vqa")}
            for k, v in runs.items()}
    vqa = {k: {w: max(r["samples_per_s"][w] for r in v) for w in v[0]["samples_per_s"] if w.startswith("vqa")}
           for k, v in runs.items()}
    stage = {k: {s: min(r["stage_us_per_sample"][s] for r in v) for s in v[0]["stage_us_per_sample"]}
             for k, v in runs.items()}
    loads = [r[key] for v in runs.values() for r in v for key in ("load_start", "load_end")]
    print(f"\nbefore = {args.before}, after = this tree; batch {args.batch_size}; "
          f"{a['regions_per_image']:.0f} regions/image; load averages seen: {', '.join(loads)}")
    print(f"\nbytes per sample (one collated batch of each task)\n  {'task':<12}{'before KB':>11}{'after KB':>10}{'ratio':>8}")
    for task in b["bytes_per_sample"]:
        x, y = b["bytes_per_sample"][task], a["bytes_per_sample"][task]
        print(f"  {task:<12}{x / 1e3:>11,.1f}{y / 1e3:>10,.1f}{x / y:>7.2f}x")
    print(f"\nstage cost, us per sample (main process, best of {args.rounds})\n  {'stage':<18}{'before':>9}{'after':>9}{'speed-up':>10}")
    for s in stage["before"]:
        print(f"  {s:<18}{stage['before'][s]:>9,.0f}{stage['after'][s]:>9,.0f}{ratio(stage['before'][s], stage['after'][s]):>10}")
    print(f"\npretraining samples/s through make_dataloader (best of {args.rounds} rounds)")
    print(f"  {'workers':<10}{'before':>9}{'after':>9}{'after/before':>14}")
    for w in best["before"]:
        print(f"  {w:<10}{best['before'][w]:>9,.0f}{best['after'][w]:>9,.0f}{ratio(best['after'][w], best['before'][w]):>14}")
    for k in ("before", "after"):
        if "1" in best[k] and "2" in best[k]:
            print(f"  {k}: two workers / one = {best[k]['2'] / best[k]['1']:.2f}x (wall clock)")
    cpu = {k: {w: min(r["cpu_us_per_sample"][w]["workers"] for r in v) for w in v[0]["cpu_us_per_sample"]
               if w != "0" and not w.startswith("vqa")} for k, v in runs.items()}
    main_cpu = {k: {w: min(r["cpu_us_per_sample"][w]["main"] for r in v) for w in v[0]["cpu_us_per_sample"]}
                for k, v in runs.items()}
    print(f"\nCPU us per sample (all workers together / main process), best of {args.rounds}")
    print(f"  {'workers':<10}{'before':>16}{'after':>16}")
    for w in best["before"]:
        if w == "0":
            print(f"  {w:<10}{'- / ' + format(main_cpu['before'][w], ',.0f'):>16}{'- / ' + format(main_cpu['after'][w], ',.0f'):>16}")
        else:
            cells = [f"{cpu[k][w]:,.0f} / {main_cpu[k][w]:,.0f}" for k in ("before", "after")]
            print(f"  {w:<10}{cells[0]:>16}{cells[1]:>16}")
    for k in ("before", "after"):
        if "1" in cpu[k] and "2" in cpu[k]:
            # each worker's own rate (samples per CPU second) with two, relative to one alone, times two
            print(f"  {k}: two workers deliver {2 * cpu[k]['1'] / cpu[k]['2']:.2f}x one worker's samples per "
                  f"wall second given a free core each (CPU cost per sample {cpu[k]['2'] / cpu[k]['1']:.2f}x)")
    if vqa["before"]:
        print(f"\nVQA fine-tuning samples/s through make_dataloader (best of {args.rounds} rounds)")
        print(f"  {'workers':<10}{'before':>9}{'after':>9}{'after/before':>14}")
        for w in vqa["before"]:
            print(f"  {w[3:]:<10}{vqa['before'][w]:>9,.0f}{vqa['after'][w]:>9,.0f}"
                  f"{ratio(vqa['after'][w], vqa['before'][w]):>14}")
    print(f"\nH200 step: {H200_STEP_S * 1e3:.0f} ms at batch {args.batch_size} "
          f"({args.batch_size / H200_STEP_S:,.0f} samples/s)")
    for k in ("before", "after"):
        if "1" in best[k]:
            per_batch = args.batch_size / best[k]["1"]
            print(f"  {k}: one worker takes {per_batch * 1e3:,.0f} ms per batch = {per_batch / H200_STEP_S:.1f} H200 "
                  f"steps; workers needed (one CPU core each, this CPU) = {int(np.ceil(per_batch / H200_STEP_S))}")


if __name__ == "__main__":
    main()
