"""Retrieval evaluation, before vs after: pairs/s of building the (caption, image) batches, and of the
whole loop with a small model, projected to Flickr30k test (5,000 captions x 1,000 images = 5M pairs).

Before: ``make_dataloader(RetrievalEvalDataset, sampler=pairs)``, each pair collated from the image's
decoded regions (copied into every row) and the batch copied to the device. After:
``data.retrieval.iter_pair_batches``, each image read and moved once, a batch gathered on the device.
The store holds 36 regions x 2048-d float16 per image (bench_data_pipeline.py writes it); pairs are
image-major as ``RetrievalTask.evaluate`` orders them.

Defaults: 4 images x 5,000 captions (the synthetic train split), so that, as in Flickr30k test, a run
of one image's pairs fills 19.5 batches of 256 and about one batch in 20 spans two images.

    PYTHONPATH=src python benchmarks/bench_retrieval_eval.py [--images 4] [--captions 5000] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench_compare import BEFORE_DEFAULT, REPO, child_setup, extract_src, load, ratio, run_child

FLICKR_PAIRS = 5000 * 1000


def child(args) -> dict:
    child_setup(args.src)
    import torch

    import switchbert
    from switchbert.data import RetrievalEvalDataset, load_tokenizer, make_dataloader, open_feature_store
    from switchbert.data import retrieval as retrieval_data

    torch.set_num_threads(1)
    root = Path(args.root)
    ds = RetrievalEvalDataset(root / "flickr30k" / f"{args.split}.jsonl", open_feature_store(root / "features36.lmdb"),
                              load_tokenizer())
    n_img, n_cap = min(args.images, ds.num_images), min(args.captions, ds.num_captions)
    pairs = [i * ds.num_captions + c for i in range(n_img) for c in range(n_cap)]
    fast = hasattr(retrieval_data, "iter_pair_batches")

    def batches():
        if fast:
            yield from retrieval_data.iter_pair_batches(ds, pairs, args.batch_size, "cpu")
        else:
            for batch, labels in make_dataloader(ds, args.batch_size, sampler=pairs):
                yield batch.to("cpu"), labels.to("cpu")

    out = {"load": load(), "pairs": len(pairs), "path": "iter_pair_batches" if fast else "DataLoader"}
    t0 = time.perf_counter()
    for _ in batches():
        pass
    out["data_pairs_per_s"] = len(pairs) / (time.perf_counter() - t0)
    torch.manual_seed(0)
    model = switchbert.create_model("uniter-tiny", region_feat_dim=2048).eval()
    heads = torch.nn.Linear(model.config.pooler_size, 1)
    model_pairs = pairs[: args.model_pairs]
    with torch.no_grad():
        t0 = time.perf_counter()
        seen = 0
        for batch, _ in batches():
            heads(model(batch).pooled)
            seen += batch.batch_size
            if seen >= len(model_pairs):
                break
        out["tiny_model_pairs_per_s"] = seen / (time.perf_counter() - t0)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE_DEFAULT)
    ap.add_argument("--split", default="train", help="synthetic Flickr30k split to pair (train has 8,000 captions)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--captions", type=int, default=5000, help="captions per image run (5,000 as in Flickr30k test)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--model-pairs", type=int, default=2048, help="pairs through the tiny model")
    ap.add_argument("--data", default=None, help="bench_data_pipeline.py's data directory (DIR/data) to reuse")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        Path(args.json).write_text(json.dumps(child(args)))
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench_retrieval_eval_"))
    try:
        root = Path(args.data) if args.data else scratch / "data"
        if not (root / "features36.lmdb" / "data.mdb").exists():
            sys.path.insert(0, str(REPO / "src"))
            from bench_data_pipeline import build_root

            build_root(root, 400)
        before_src = extract_src(args.before, scratch)
        common = ["--root", str(root), "--split", args.split, "--images", str(args.images), "--captions", str(args.captions),
                  "--batch-size", str(args.batch_size), "--model-pairs", str(args.model_pairs)]
        b = run_child("bench_retrieval_eval.py", before_src, common)
        a = run_child("bench_retrieval_eval.py", REPO / "src", common)
        print(f"before = {args.before} ({b['path']}), after = this tree ({a['path']}); {a['pairs']:,} pairs "
              f"(image-major), batch {args.batch_size}, 36 x 2048 regions; load {b['load']} / {a['load']}")
        print(f"  {'':<34}{'before':>10}{'after':>10}{'ratio':>8}")
        for key, label in (("data_pairs_per_s", "batches built, pairs/s (1 core)"),
                           ("tiny_model_pairs_per_s", "with uniter-tiny, pairs/s (1 core)")):
            print(f"  {label:<34}{b[key]:>10,.0f}{a[key]:>10,.0f}{ratio(a[key], b[key]):>8}")
        for k, r in (("before", b), ("after", a)):
            print(f"  {k}: building the 5M Flickr30k test pairs takes {FLICKR_PAIRS / r['data_pairs_per_s'] / 60:,.1f} "
                  f"core-minutes on this CPU")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
