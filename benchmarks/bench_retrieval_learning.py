"""How fast each model's 4-way retrieval loss leaves ln 4 on the demo's data, side by side (BENCHMARKS.md, "The demo").

Trains retrieval from random weights with the demo's stage config (`switchbert.commands.demo`) for a
fixed number of steps at a constant learning rate, with tau annealed over the run as the trainer
does, and prints the mean 4-way loss of every 25 steps for each variant in one table:

- UNITER (joint attention only, no switching),
- Switch-BERT with one Gumbel draw per caption's candidates (``train.retrieval_shared_noise``, default),
- Switch-BERT with its own draw per pair (the paper leaves it open; our earlier behaviour),
- Switch-BERT with input switching only (J mode, SIB) and with attention switching only (SAB, no SIB).

ln 4 = 1.3863 is a model that cannot tell the four candidates apart. One CPU thread:

    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval_learning.py                      # default size, ~7 min
    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval_learning.py --size tiny --steps 200
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from pathlib import Path

import torch

from switchbert.demo import SIZES, Cell, ensure_data, stage_config
from switchbert.temperature import temperature_at
from switchbert.train.distributed import DistContext
from switchbert.train.tasks import build_task
from switchbert.train.trainer import initial_model, seed_everything

VARIANTS: dict[str, tuple[dict, bool]] = {  # name -> (model overrides, shared noise)
    "UNITER": ({"sab_modes": ["J"], "sib": None}, True),
    "Switch-BERT shared": ({}, True),
    "Switch-BERT per pair": ({}, False),
    "SIB only (J)": ({"sab_modes": ["J"]}, True),
    "SAB only": ({"sib": None}, True),
}


def train(data: Path, manifest: dict, size, overrides: dict, shared: bool, steps: int, batch: int, lr: float,
          seed: int, work: Path) -> list[float]:
    cell = Cell("bench", overrides, size, data, work.parent, seed, stage_overrides={
        "retrieval": {"output_dir": str(work), "model.init_from": None, "train.retrieval_shared_noise": shared}})
    cfg = stage_config(cell, "retrieval", manifest)
    seed_everything(seed)
    model = initial_model(cfg)
    task = build_task(cfg, model.config, DistContext())
    heads = task.build_heads(model)
    ds = task.train_dataset()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, collate_fn=ds.collate,
                                         generator=torch.Generator().manual_seed(seed))
    params = list(model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    model.train(), heads.train()
    losses: list[float] = []
    while len(losses) < steps:
        for b, labels in loader:
            model.set_temperature(temperature_at(len(losses), steps, cfg.train.tau_max, cfg.train.tau_min))
            loss = task.step(model, heads, b, labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
            if len(losses) >= steps:
                break
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="default", choices=sorted(SIZES))
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=16, help="captions per step (4 pairs each)")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    # The default size's recipe (dropout 0) at any size: the tiny size alone keeps the preset's 0.1.
    size = dataclasses.replace(SIZES[args.size], images=max(SIZES[args.size].images, 60), dropout=0.0)
    every = 25
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        manifest = ensure_data(data, size, 0)
        curves, seconds = {}, {}
        for name in args.variants:
            overrides, shared = VARIANTS[name]
            t0 = time.perf_counter()
            curves[name] = train(data, manifest, size, overrides, shared, args.steps, args.batch_size, args.lr,
                                 args.seed, Path(tmp) / name.replace(" ", "_"))
            seconds[name] = time.perf_counter() - t0
    print(f"4-way retrieval loss (mean of each {every} steps), {args.size} size, batch {args.batch_size}, "
          f"lr {args.lr}, seed {args.seed}; ln 4 = {math.log(4):.4f}")
    print("| step | " + " | ".join(curves) + " |")
    print("|---:" + "|---:" * len(curves) + "|")
    for end in range(every, args.steps + 1, every):
        cells = [f"{sum(c[end - every:end]) / every:.3f}" for c in curves.values()]
        print(f"| {end} | " + " | ".join(cells) + " |")
    print("| seconds | " + " | ".join(f"{seconds[n]:.0f}" for n in curves) + " |")


if __name__ == "__main__":
    main()
