"""Training-step time of every base-size preset at the controlled shape, against uniter-base.

One step = forward + a loss on the hidden states and fused vector + backward + AdamW, on a random
batch of 38 text tokens and 36 regions (+ the IMG token) (docs/method.md §6). Switching presets train with soft
routes (the paper's training mode), so their cost is the cost the paper pays.

    python benchmarks/bench_presets.py --batch-size 8 --steps 3 --device cpu
    python benchmarks/bench_presets.py --presets uniter-base,lxmert-base --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import switchbert
from switchbert.data.random_batch import random_batch

TEXT, REGIONS = 38, 36


def base_presets() -> list[str]:
    """Every BERT-base-sized preset: uniter-base first (the reference), the other baselines, then Switch-BERT's."""
    names = [n for n in sorted(switchbert.PRESETS) if switchbert.get_config(n).hidden_size == 768]
    baselines = [n for n in names if not n.startswith("switchbert") and n != "uniter-base"]
    return ["uniter-base"] + baselines + [n for n in names if n.startswith("switchbert")]


def time_preset(name: str, batch_size: int, steps: int, warmup: int, device: str) -> float:
    """Median milliseconds of one training step."""
    torch.manual_seed(0)
    model = switchbert.create_model(name).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = random_batch(model.config, batch_size=batch_size, num_text=TEXT, num_regions=REGIONS, padded=False,
                         device=device)
    times = []
    for i in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(batch)
        loss = out.text_hidden.float().pow(2).mean() + out.region_hidden.float().pow(2).mean() + out.pooled.float().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--presets", default="", help="comma-separated names (default: every base-size preset)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    names = [n for n in args.presets.split(",") if n] or base_presets()
    unknown = [n for n in names if n not in switchbert.PRESETS]
    if unknown:
        p.error(f"unknown presets {unknown}")
    if "uniter-base" not in names:
        names = ["uniter-base"] + names
    print(f"device={args.device} batch={args.batch_size} text={TEXT} regions={REGIONS}+IMG steps={args.steps}")
    ref = None
    print("| preset | ms/step | vs uniter-base |")
    print("|---|---:|---:|")
    for name in names:
        ms = time_preset(name, args.batch_size, args.steps, args.warmup, args.device)
        ref = ms if name == "uniter-base" else ref
        print(f"| {name} | {ms:.0f} | {ms / ref:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
