"""Throughput of a full pretraining step, from the feature store to the optimizer (performance goal 4, docs/performance.md).

One step is what ``switchbert train`` does per batch (train/tasks/pretrain.py PretrainTask): a batch from a
feature store through ``CaptionPairsDataset`` (tokenise, MLM/MRC/ITM corruption, collate) and
``make_dataloader``; copy to the device; encoder + ``PretrainHeads`` (MLM logits at the masked
positions only) + MLM + MRC-KL + ITM loss; backward; clip 5.0; AdamW (the trainer's parameter groups).
The store is the synthetic benchmark (``switchbert.data.synth.generate``: 2048-d features, 1601 classes)
written to a temporary directory.

Each step is split into
    data wait   blocked on the DataLoader + host-to-device copy (0 when workers keep up)
    compute     forward, backward, clip, optimizer step (device synchronised at the end)
and the samples/s of the whole step gives the projection of the paper's pretraining, 2.7M pairs x 10
epochs (docs/method.md §6), onto one device of the kind measured.

Rows (same run, interleaved rounds): Switch-BERT (4 modes, soft, SIB), our UNITER architecture, and
UNITER with MLM logits at every text position (what masked-only logits save).

    python benchmarks/bench_pretrain_step.py                          # CPU, small, batch 4
    python benchmarks/bench_pretrain_step.py --device cuda --dtype bf16 --size base --batch-size 256 \\
        --steps 10 --workers 8
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn

import switchbert
from switchbert.data import CaptionPairsDataset, load_tokenizer, make_dataloader, open_feature_store
from switchbert.data.synth import generate
from switchbert.heads import PretrainHeads
from switchbert.heads.losses import ignore_mismatched, pretrain_loss
from switchbert.paper import PRETRAIN_EPOCHS as PAPER_EPOCHS
from switchbert.paper import PRETRAIN_PAIRS as PAPER_PAIRS
from switchbert.train.optim import build_optimizer

from bench_hf import DTYPES, add_common_args, autocast_for, env_line, model_config, sync

VARIANTS: dict[str, tuple[str, bool]] = {  # row -> (family, MLM logits at masked positions only)
    "switchbert (4 modes, soft, SIB)": ("switchbert", True),
    "uniter arch": ("uniter", True),
    "uniter arch, MLM logits at all positions": ("uniter", False),
}


def make_store(root: Path, num_images: int, feat_dim: int, num_classes: int) -> float:
    """Writes the synthetic benchmark under ``root``; returns the seconds it took."""
    t0 = time.perf_counter()
    generate(root, num_images, seed=0, feat_dim=feat_dim, num_classes=num_classes, questions_per_image=1)
    return time.perf_counter() - t0


def endless(loader) -> Iterator:
    """Batches forever: restarts the loader (a new epoch) when it runs out."""
    while True:
        yield from loader


class PretrainStep:
    """One model + heads + optimizer, stepping on batches from its own DataLoader."""

    def __init__(self, family: str, masked_mlm: bool, args: argparse.Namespace, dataset: CaptionPairsDataset,
                 num_classes: int) -> None:
        self.device, self.masked_mlm = args.device, masked_mlm
        self.autocast = autocast_for(args.device, DTYPES[args.dtype])
        torch.manual_seed(0)
        self.model = switchbert.models.build_model(model_config(family, args.size)).to(args.device).train()
        self.model.set_temperature(1.0)
        c = self.model.config
        self.heads = PretrainHeads(self.model.get_word_embeddings(), c.region_hidden_size_, c.pooler_size,
                                   num_region_classes=num_classes).to(args.device).train()
        # docs/method.md §6 optimiser: AdamW lr 1e-4, betas (.9, .999), eps 1e-6, decay 0.01 except bias/LayerNorm.
        self.opt = build_optimizer([self.model, self.heads], 1e-4, 0.01, (0.9, 0.999), 1e-6)
        self.params = [p for group in self.opt.param_groups for p in group["params"]]
        self.encoder: Callable = torch.compile(self.model) if args.compile else self.model
        loader = make_dataloader(dataset, args.batch_size, shuffle=True, num_workers=args.workers,
                                 pin_memory=args.device.startswith("cuda"), seed=0, drop_last=True,
                                 persistent_workers=args.workers > 0)
        self.batches = endless(loader)
        self.data_ms: list[float] = []
        self.compute_ms: list[float] = []

    def __call__(self, record: bool = True) -> None:
        t0 = time.perf_counter()
        batch, labels = next(self.batches)
        batch.validate(self.model.config.region_feat_dim)  # on the host, as the trainer does: no GPU sync
        batch = batch.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        sync(self.device)
        t1 = time.perf_counter()
        with self.autocast:
            out = self.encoder(batch, validate=False)
            mlm_labels, mrc_mask = ignore_mismatched(labels.itm_labels, labels.mlm_labels, labels.mrc_mask)
            # The collate's flat target positions: gathering by them needs no host sync (train/tasks/pretrain.py).
            logits = self.heads(out, mlm_labels=mlm_labels if self.masked_mlm else None, mrc_target_mask=mrc_mask,
                                mlm_index=labels.mlm_index if self.masked_mlm else None, mrc_index=labels.mrc_index)
            loss = pretrain_loss(logits, itm_labels=labels.itm_labels, mrc_target_probs=labels.mrc_targets,
                                 mlm_labels=None if self.masked_mlm else mlm_labels)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        sync(self.device)
        t2 = time.perf_counter()
        if record:
            self.data_ms.append((t1 - t0) * 1e3)
            self.compute_ms.append((t2 - t1) * 1e3)


def run(args: argparse.Namespace, variants: Optional[dict[str, tuple[str, bool]]] = None) -> dict[str, Any]:
    """Builds the store, times every variant in interleaved rounds; returns the rows and the setup."""
    variants = variants or VARIANTS
    feat_dim = model_config("uniter", args.size).region_feat_dim
    num_classes = 1601 if args.size != "tiny" else 50
    scratch = Path(tempfile.mkdtemp(prefix="bench_pretrain_"))
    try:
        gen_s = make_store(scratch, args.images, feat_dim, num_classes)
        store = open_feature_store(scratch / "features.lmdb")
        dataset = CaptionPairsDataset(scratch / "cc" / "caption_train.json", store, load_tokenizer(), seed=0)
        steps = {name: PretrainStep(fam, masked, args, dataset, num_classes) for name, (fam, masked) in
                 variants.items()}
        for step in steps.values():
            for _ in range(args.warmup):
                step(record=False)
        for _ in range(args.steps):
            for step in steps.values():
                step()
        rows = []
        for name, step in steps.items():
            data, compute = statistics.median(step.data_ms), statistics.median(step.compute_ms)
            total = statistics.median([d + c for d, c in zip(step.data_ms, step.compute_ms)])
            sps = args.batch_size / total * 1e3
            rows.append(dict(name=name, data_ms=data, compute_ms=compute, step_ms=total, samples_per_s=sps,
                             data_share=data / (data + compute),
                             paper_hours=PAPER_PAIRS * PAPER_EPOCHS / sps / 3600))
            del step
        ref = next(r for r in rows if r["name"] == "uniter arch")["step_ms"] if any(
            r["name"] == "uniter arch" for r in rows) else rows[0]["step_ms"]
        for r in rows:
            r["vs_uniter"] = r["step_ms"] / ref
        return dict(rows=rows, images=args.images, train_pairs=len(dataset), generate_s=gen_s,
                    workers=args.workers, feat_dim=feat_dim, num_classes=num_classes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def format_table(result: dict[str, Any]) -> str:
    lines = ["| variant | data wait ms | compute ms | step ms | data share | samples/s | vs uniter | "
             f"{PAPER_PAIRS / 1e6:.1f}M x {PAPER_EPOCHS} ep, hours |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['data_ms']:.1f} | {r['compute_ms']:.1f} | {r['step_ms']:.1f} | "
                     f"{100 * r['data_share']:.0f}% | {r['samples_per_s']:.1f} | {r['vs_uniter']:.2f}x | "
                     f"{r['paper_hours']:,.0f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, batch_size=4, steps=3)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    p.add_argument("--images", type=int, default=100, help="synthetic images to generate (80%% are training pairs)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(f"pretraining step (store -> DataLoader -> encoder + MLM/MRC/ITM heads -> loss -> AdamW), size {args.size}, "
          f"batch {args.batch_size}, {args.dtype}, {'compiled' if args.compile else 'eager'}, {args.workers} workers, "
          f"median of {args.steps} interleaved steps; synthetic store {result['images']} images "
          f"({result['feat_dim']}-d, {result['num_classes']} classes), written in {result['generate_s']:.1f} s")
    print(env_line(args.device))
    print(format_table(result))
    print(f"hours = {PAPER_PAIRS:,} pairs x {PAPER_EPOCHS} epochs / samples/s, on one device of the kind measured.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
