"""Training-step cost of switching: Switch-BERT vs the same encoder fixed to joint attention.

Times forward + backward of one training step at the controlled shape (38 text tokens, 36 regions +
the IMG token) for:
  1. Switch-BERT: four modes, soft Gumbel mixing, SIB (the paper's model, training mode), with the
     fused attention (one score matrix, hand-written backward), the sdpa one (three SDPA calls) and the
     flex one (two block attentions merged by their log-sum-exp; FlexAttention only on CUDA compiled);
  2. the same encoder with only J and no SIB (the UNITER architecture) -- the baseline;
  3. Switch-BERT with the reference attention path (each mode its own masked pass) -- the naive way.
and prints each time and its ratio to (2), all measured in the same run on the same device.

    python benchmarks/bench_switch_step.py                        # CPU, switchbert-small, batch 8
    python benchmarks/bench_switch_step.py --preset switchbert-base --device cuda --dtype bf16 --batch-size 256
"""

from __future__ import annotations

import argparse

import torch

import switchbert
from switchbert.data.random_batch import random_batch

from bench_hf import autocast_for, interleaved_median_ms, ours_step_fn


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="switchbert-small")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile each model")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: steady on a small shared machine)")
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)

    variants = {
        "switch-bert (4 modes, soft, SIB), fused": {},
        "switch-bert, sdpa path (3 SDPA calls)": {"attention_impl": "sdpa"},
        "switch-bert, flex path (lse merge; math kernel off CUDA-compile)": {"attention_impl": "flex"},
        "plain: J only, no SIB (UNITER arch)": {"sab_modes": ("J",), "sib": None},
        "switch-bert, reference path (4 passes)": {"attention_impl": "reference"},
    }
    config = switchbert.get_config(args.preset)
    batch = random_batch(config, args.batch_size, num_text=38, num_regions=36, padded=True, device=args.device)
    steps = {}
    for name, overrides in variants.items():
        model = switchbert.create_model(args.preset, **overrides).to(args.device).train()
        model.set_temperature(1.0)
        steps[name] = ours_step_fn(torch.compile(model) if args.compile else model, batch, autocast_for(args.device, dtype))
    # One step of every variant per round, then the median: load bursts hit every row alike.
    results = {k: v / 1e3 for k, v in interleaved_median_ms(steps, args.warmup, args.steps, args.device).items()}
    base = results["plain: J only, no SIB (UNITER arch)"]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"preset {args.preset}, batch {args.batch_size}, 38 text + 37 region tokens, {args.dtype}, "
          f"{'compiled' if args.compile else 'eager'}, device {device_name}, torch {torch.__version__}")
    print(f"{'variant':<64} {'ms/step':>10} {'vs plain':>9}")
    for name, t in results.items():
        print(f"{name:<64} {t * 1e3:>10.1f} {t / base:>8.2f}x")


if __name__ == "__main__":
    main()
