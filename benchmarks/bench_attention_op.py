"""The soft-mixture attention op alone, forward + backward: fused vs sdpa vs flex, one run.

Times each implementation of the soft mode mixture (``layers/block_attention.py``,
``layers/lse_attention.py``) at the controlled shape (38 text + 37 region tokens), with one text-only
sample and random mode coefficients, interleaved round by round. On CPU it reports process CPU time,
which neighbours' load distorts less than wall-clock time; on CUDA, wall-clock time after a sync.
Off CUDA the flex path runs its math kernel (FlexAttention needs CUDA and torch.compile).

    python benchmarks/bench_attention_op.py                          # CPU, B 8, 6 heads of 64
    python benchmarks/bench_attention_op.py --dropout 0 --rounds 40
    python benchmarks/bench_attention_op.py --device cuda --batch-size 256 --heads 12 --compile
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from switchbert.layers.block_attention import block_mixed_attention, split_mixed_attention
from switchbert.layers.lse_attention import lse_mixed_attention

T, N = 38, 75


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile each op (the flex one needs it on CUDA)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    B, H, hd, dev = args.batch_size, args.heads, args.head_dim, args.device
    g = torch.Generator().manual_seed(0)
    # Head-split views of (B, N, H, hd), as the layer passes them.
    qkv = [torch.randn(B, N, H, hd, generator=g).to(dev).transpose(1, 2).requires_grad_() for _ in range(3)]
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[0, T:] = False  # text-only sample
    valid[1 % B, T + 20:] = False  # padded regions
    valid = valid.to(dev)
    coefs = torch.rand(B, N, 3, generator=g).to(dev).requires_grad_()
    ops = {
        "fused": lambda q, k, v, c: block_mixed_attention(q, k, v, valid, T, c, args.dropout),
        "sdpa": lambda q, k, v, c: split_mixed_attention(q, k, v, valid, T, c, args.dropout),
        "flex": lambda q, k, v, c: lse_mixed_attention(q, k, v, valid, T, c, args.dropout),
    }
    if args.compile:
        ops = {k: torch.compile(f) for k, f in ops.items()}
    cuda = dev.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    times: dict[str, list[float]] = {k: [] for k in ops}
    for r in range(args.warmup + args.rounds):
        for name, op in ops.items():
            if cuda:
                torch.cuda.synchronize()
            t0 = clock()
            op(*qkv, coefs).transpose(1, 2).reshape(B, N, -1).sum().backward()
            if cuda:
                torch.cuda.synchronize()
            if r >= args.warmup:
                times[name].append((clock() - t0) * 1e3)
    kind = "wall" if cuda else "process CPU"
    print(f"attention op fwd + bwd, B {B}, H {H}, hd {hd}, {N} tokens, dropout {args.dropout}, device {dev}, "
          f"{'compiled' if args.compile else 'eager'}, torch {torch.__version__}; median {kind} ms of {args.rounds}")
    base = statistics.median(times["fused"])
    for name, v in times.items():
        m = statistics.median(v)
        print(f"{name:<8} {m:9.2f} ms  {m / base:5.2f}x")


if __name__ == "__main__":
    main()
