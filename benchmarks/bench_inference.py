"""Inference with hard routes: throughput, and whether grouping samples by route pays (performance goal 5, docs/performance.md).

1. End to end: eval-mode (hard argmax routes, no Gumbel noise) samples/s of Switch-BERT against our
   UNITER architecture, same batch, under ``torch.inference_mode``.
2. Attention alone, one layer, at the controlled shape, every sample on its own hard mode (drawn
   uniformly: the most groups, the best case for grouping's savings and the worst for its overhead):
     masked      what the model does: ONE SDPA over all N keys with a per-sample (B, 1, N, N) mask
                 (``hard_route_mask``), so every mode costs a full N x N attention;
     grouped     samples grouped by mode, each group attending only to the keys its mode sees:
                 SS as two smaller attentions (text x text, regions x regions), SC over the T text
                 keys, CS over the R region keys, J over all; outputs scattered back. Checked equal
                 to ``masked`` before timing;
     joint       UNITER's attention (every sample J, key-padding mask): the floor.
   and the whole layer (QKV, attention, output, FFN, LayerNorms) for scale.

Why grouping can at most shave attention's share: per token and layer the linear layers cost
2(4D^2 + 2DF) FLOPs and the two attention products 4ND; at N = 75, D = 768, F = 3072 attention is
~1.6% of the layer's FLOPs. SS/SC/CS skip at most ~half of it. Sorting the batch by whole-route
signature is not possible before the forward: each layer's route is decided from that layer's input
(SAB) or the previous layer's output (SIB), so routes exist only layer by layer; for the same reason
no layer can be skipped (the SIB switcher reads the very output it might discard).

    python benchmarks/bench_inference.py                                       # CPU, small, batch 8
    python benchmarks/bench_inference.py --device cuda --dtype bf16 --size base --batch-size 256 --steps 20
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

import switchbert
from switchbert.config import MODES
from switchbert.layers.attention import hard_route_mask

from bench_hf import (DTYPES, REGIONS, TEXT, add_common_args, autocast_for, controlled_batch, env_line,
                      interleaved_median_ms, model_config)


def attention_flop_share(N: int, D: int, F_: int) -> float:
    """Attention's share (QK^T and PV) of one layer's matmul FLOPs, per token."""
    linear = 2 * (4 * D * D + 2 * D * F_)
    attention = 2 * 2 * N * D
    return attention / (linear + attention)


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor, num_text: int, choice: Tensor) -> Tensor:
    """Hard-route attention with each mode's group attending only to the key block(s) it sees.

    Args:
        q, k, v: (B, H, N, hd).
        key_valid: (B, N) bool.
        num_text: T.
        choice: (B,) long index into ``MODES`` (SS, SC, CS, J).

    Returns:
        (B, H, N, hd), equal to the masked SDPA of ``hard_route_mask`` at every row with a valid key.
    """
    T = num_text
    out = torch.empty_like(q)
    for m, mode in enumerate(MODES):
        idx = (choice == m).nonzero().flatten()  # host sync: the group sizes decide the shapes
        if idx.numel() == 0:
            continue
        qg, kg, vg, valid = q[idx], k[idx], v[idx], key_valid[idx]

        def attend(qs: Tensor, ks: Tensor, vs: Tensor, kv: Tensor) -> Tensor:
            return F.scaled_dot_product_attention(qs, ks, vs, attn_mask=kv[:, None, None, :])

        if mode == "SS":  # text -> text, regions -> regions: two attentions, T x T and R x R
            ctx = torch.cat([attend(qg[:, :, :T], kg[:, :, :T], vg[:, :, :T], valid[:, :T]),
                             attend(qg[:, :, T:], kg[:, :, T:], vg[:, :, T:], valid[:, T:])], dim=2)
        elif mode == "SC":  # everyone -> text keys
            ctx = attend(qg, kg[:, :, :T], vg[:, :, :T], valid[:, :T])
        elif mode == "CS":  # everyone -> region keys
            ctx = attend(qg, kg[:, :, T:], vg[:, :, T:], valid[:, T:])
        else:
            ctx = attend(qg, kg, vg, valid)
        out.index_copy_(0, idx, ctx)
    return out


def attention_rows(args: argparse.Namespace) -> dict[str, Any]:
    """Times masked / grouped / joint attention and a whole layer at the controlled shape."""
    device, dtype = args.device, DTYPES[args.dtype]
    config = model_config("switchbert", args.size)
    B, D, H = args.batch_size, config.hidden_size, config.num_heads
    batch = controlled_batch(config, B, device)
    T, N = TEXT, TEXT + REGIONS + 1
    g = torch.Generator().manual_seed(0)
    key_valid = torch.cat([batch.text_mask, torch.ones(B, 1, dtype=torch.bool, device=device), batch.region_mask], 1)
    q, k, v = (torch.randn(B, H, N, D // H, generator=g).to(device=device, dtype=dtype) for _ in range(3))
    choice = torch.randint(0, len(MODES), (B,), generator=g).to(device)
    w = F.one_hot(choice, len(MODES)).float()
    layer = switchbert.models.build_model(config).layers[0].to(device).eval()
    x = torch.randn(B, N, D, generator=g).to(device)
    autocast = autocast_for(device, dtype)

    def masked() -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=hard_route_mask(key_valid, T, w))

    def joint() -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])

    def grouped() -> Tensor:
        return grouped_attention(q, k, v, key_valid, T, choice)

    def whole_layer() -> None:
        with autocast:
            layer(x, key_valid, T, w, True, "fused")

    with torch.inference_mode():
        a, b = masked(), grouped()
        rows_ok = key_valid[:, None, :, None].expand_as(a)  # compare real query rows only
        err = (a.float() - b.float())[rows_ok].abs().max().item()
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        if not err <= tol:
            raise AssertionError(f"grouped attention differs from masked SDPA by {err:.2e} (tolerance {tol})")
        ms = interleaved_median_ms({"masked": masked, "grouped": grouped, "joint": joint, "layer": whole_layer},
                                   args.warmup, args.steps, device)
    return dict(ms=ms, max_abs_diff=err, share=attention_flop_share(N, D, config.intermediate_size),
                counts=torch.bincount(choice, minlength=len(MODES)).tolist())


def end_to_end_rows(args: argparse.Namespace) -> dict[str, float]:
    """Eval-mode ms per batch of Switch-BERT (hard routes) and the UNITER architecture."""
    device, autocast = args.device, autocast_for(args.device, DTYPES[args.dtype])
    fns: dict[str, Callable[[], None]] = {}
    for family in ("switchbert", "uniter"):
        torch.manual_seed(0)
        config = model_config(family, args.size)
        model = switchbert.models.build_model(config).to(device).eval()
        encoder = torch.compile(model) if args.compile else model
        batch = controlled_batch(config, args.batch_size, device)

        def fn(encoder=encoder, batch=batch) -> None:
            with torch.inference_mode(), autocast:
                encoder(batch, validate=False)

        fns[family] = fn
    return interleaved_median_ms(fns, args.warmup, args.steps, device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return dict(end_to_end=end_to_end_rows(args), attention=attention_rows(args))


def format_tables(result: dict[str, Any], batch_size: int) -> str:
    e2e, att = result["end_to_end"], result["attention"]
    lines = ["| eval, hard routes | ms/batch | samples/s | vs uniter |", "|---|---:|---:|---:|"]
    for name, ms in e2e.items():
        lines.append(f"| {name} | {ms:.1f} | {batch_size / ms * 1e3:.1f} | {ms / e2e['uniter']:.2f}x |")
    ms = att["ms"]
    lines += ["", f"one layer, modes per sample (SS, SC, CS, J) = {att['counts']}; attention is "
              f"{100 * att['share']:.1f}% of a layer's FLOPs; grouped == masked within {att['max_abs_diff']:.1e}",
              "| attention variant | ms | vs masked | saving as share of the layer |", "|---|---:|---:|---:|"]
    for name in ("masked", "grouped", "joint"):
        lines.append(f"| {name} | {ms[name]:.2f} | {ms[name] / ms['masked']:.2f}x | "
                     f"{100 * (ms['masked'] - ms[name]) / ms['layer']:+.1f}% |")
    lines.append(f"| whole layer (masked path) | {ms['layer']:.2f} | | |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, batch_size=8, steps=5)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args)
    print(f"inference (eval, hard routes), size {args.size}, batch {args.batch_size}, {TEXT} text + {REGIONS + 1} "
          f"region tokens, {args.dtype}, {'compiled' if args.compile else 'eager'}, median of {args.steps} rounds")
    print(env_line(args.device))
    print(format_tables(result, args.batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
