"""``switchbert smoke``: build a preset, take training steps on a random batch, print each sample's route.

A first check that an installation works; it trains on random data, so the loss means nothing beyond
"it goes down".
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from switchbert.models import build_model as create_model
from switchbert.presets import PRESETS
from switchbert.data.random_batch import random_batch
from switchbert.temperature import TemperatureSchedule


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    model = create_model(args.preset, bert_dir=args.bert_dir)
    c = model.config
    print(f"{c.name}: {c.num_layers} layers, hidden {c.hidden_size}, modes {','.join(c.sab_modes)}, "
          f"SIB {c.sib or 'off'}, {model.num_parameters() / 1e6:.1f}M parameters")
    batch = random_batch(c, batch_size=args.batch_size, num_text=args.text_len, num_regions=args.regions, seed=args.seed)
    # A throwaway head: classify each sample into one of two random labels from the fused vector.
    head = torch.nn.Linear(c.pooler_size, 2)
    labels = torch.randint(0, 2, (args.batch_size,), generator=torch.Generator().manual_seed(args.seed))
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=args.lr)
    schedule = TemperatureSchedule(total_steps=args.steps)
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        model.set_temperature(schedule(step))
        out = model(batch)
        loss = F.cross_entropy(head(out.pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step + 1}/{args.steps}  loss {loss.item():.4f}  tau {schedule(step):.3f}")
    elapsed = time.perf_counter() - start
    print(f"{args.steps} training step(s) in {elapsed:.2f}s")
    model.eval()
    with torch.no_grad():
        out = model(batch)
    if out.routes:
        print("routes taken at inference (mode per layer; SIB inputs for text t and regions r):")
        for b, line in enumerate(out.route_strings()):
            print(f"  sample {b}: {line}")
    else:
        print("this preset has a fixed architecture: every sample takes the same route")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("smoke", help="a training step on a random batch, then the routes each sample takes")
    p.add_argument("--preset", default="switchbert-tiny", choices=sorted(PRESETS))
    p.add_argument("--bert-dir", default=None, help="local HF BERT directory to initialise from")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--text-len", type=int, default=16)
    p.add_argument("--regions", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
