"""The one script for a GPU session (docs/performance.md): correctness of the fused path on CUDA, then every timing.

GPU time is scarce, so this runs everything in one short call (< ~6 minutes on an H100/H200), each
section on its own: a section that fails records its error and the next one runs. Results are
written after every section, as JSON and markdown, to ``--out`` (default ``$OUT``), so a run cut off
by a time limit still leaves what it measured.

Sections, in order (the most important first; ``--budget-s`` skips what would not fit):
  correctness    fused (and sdpa) vs reference attention path of Switch-BERT on the device: soft training with
                 the same Gumbel noise (a dedicated seeded generator), outputs and every gradient, in
                 float32 (outputs atol 1e-4) and bf16 autocast; gradients (and bf16 outputs) must be
                 no further from a float64 run than the reference path's (2x + a floor); eval hard
                 routes (same outputs, same route choices)
  switch_eager   training step (fwd + bwd) at the controlled shape: Switch-BERT (soft, 4 modes, SIB;
                 fused and sdpa attention) vs our UNITER architecture vs Switch-BERT's reference path
                 (4 masked passes)                                                             [goal 1]
  linear_peak    measured bf16 matmul peak (a big square matmul) and the TFLOP/s our linear layers
                 reach at the step's shape (B*N rows), fwd + bwd                               [goal 3]
  hf             ours vs HF VisualBertModel / LxmertModel (and BertModel-SDPA) (bench_hf.py)   [goal 2]
  inference      hard-route eval throughput and the grouping measurement (bench_inference.py) [goal 5]
  pretrain       full pretraining step from a synthetic feature store through the DataLoader, and
                 the 2.7M x 10 epochs projection (bench_pretrain_step.py)                       [goal 4]
  host_syncs     one pretraining step under ``torch.cuda.set_sync_debug_mode('warn')``: every line
                 of our code that makes the host wait for the GPU
  flex_op        the flex path's attention op alone (two FlexAttention calls with their log-sum-exp, merged)
                 compiled on the device, fp32 and bf16, outputs and gradients (q, k, v and the mode
                 coefficients, a text-only sample included) against the fused op in float64; then fwd + bwd
                 ms of the op at the timing batch: fused, sdpa, flex compiled, each also compiled
  switch_compiled       Switch-BERT (fused) and UNITER under torch.compile (compilation takes minutes, so last)
  switch_compiled_sdpa  the same for the sdpa path (its own section, so a time limit keeps the first)
  switch_compiled_flex  the same for the flex path (FlexAttention runs fused only when compiled)

At the end, one line per performance goal (docs/performance.md), read off the sections' results (``goals_summary``).

    python benchmarks/gpu_check.py --out "$OUT"                 # on the GPU machine
    python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check  # CPU, tiny sizes, end to end (~1-2 min)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

import switchbert
import switchbert.layers.switcher as switcher_module

import bench_hf
import bench_inference
import bench_pretrain_step
from bench_hf import DTYPES, autocast_for, controlled_batch, interleaved_median_ms, model_config, ours_step_fn, sq

NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, fusion_dropout=0.0)


# -- correctness ----------------------------------------------------------------------------------------

@contextlib.contextmanager
def fixed_gumbel_noise(device: str, seed: int):
    """Every switcher draws its Gumbel noise from one generator, reseeded by the returned function.

    The fused and reference paths draw other random numbers in different orders (dropout calls), so
    the global RNG would give them different noise; a dedicated generator gives both the same.
    """
    original = switcher_module.gumbel_softmax_weights
    gen = torch.Generator(device=device)

    def patched(log_probs, tau, top_k, straight_through, generator=None):
        return original(log_probs, tau, top_k, straight_through, generator=gen)

    switcher_module.gumbel_softmax_weights = patched
    try:
        yield lambda: gen.manual_seed(seed)
    finally:
        switcher_module.gumbel_softmax_weights = original


def rel_err(a: Tensor, b: Tensor) -> float:
    """||a - b|| / ||b|| in float64 (0 when both are 0)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def train_pass(model: nn.Module, batch, autocast, reseed: Callable[[], Any]) -> dict[str, Tensor]:
    """Outputs and gradients of one soft-routed training forward + backward."""
    reseed()
    model.zero_grad(set_to_none=True)
    with autocast:
        out = model(batch)
        loss = sq(out.text_hidden) + sq(out.region_hidden) + sq(out.pooled)
    loss.backward()
    valid_t, valid_r = out.text_mask[..., None], out.region_mask[..., None]
    res = {"text_hidden": (out.text_hidden * valid_t).float().detach(),
           "region_hidden": (out.region_hidden * valid_r).float().detach(),
           "pooled": out.pooled.float().detach()}
    res.update({f"grad:{n}": p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None})
    return res


def compare(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Any]:
    """Outputs: max abs diff and relative error. Gradients: the relative error of all of them as one
    vector (the check), and the worst single parameter (reported, not checked: a gradient that is a
    near-cancelling sum, such as a bias feeding a LayerNorm or the key bias, whose true gradient is 0,
    has a relative error of order 1 in float32 even when both paths are right; float64 agrees to 1e-8)."""
    outs = ("text_hidden", "region_hidden", "pooled")
    missing = sorted(set(a) ^ set(b))
    if missing:
        raise AssertionError(f"gradients present in one path only: {missing[:5]}")
    grads = [k for k in a if k.startswith("grad:")]
    diff2 = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in grads)
    ref2 = sum(float(b[k].double().pow(2).sum()) for k in grads)
    worst = max(grads, key=lambda k: rel_err(a[k], b[k]))
    return dict(out_max_abs=max(float((a[k] - b[k]).abs().max()) for k in outs),
                out_rel=max(rel_err(a[k], b[k]) for k in outs),
                grad_rel=(diff2 / max(ref2, 1e-300)) ** 0.5,
                worst_param=worst[len("grad:"):], worst_param_rel=rel_err(a[worst], b[worst]))


def correctness(opts: argparse.Namespace) -> dict[str, Any]:
    device = opts.device
    family = "switchbert"
    torch.manual_seed(0)
    fused = switchbert.models.build_model(model_config(family, opts.size, **NO_DROPOUT)).to(device).train()
    ref = switchbert.models.build_model(model_config(family, opts.size, attention_impl="reference", **NO_DROPOUT))
    ref.load_state_dict(fused.state_dict())
    ref = ref.to(device).train()
    split = switchbert.models.build_model(model_config(family, opts.size, attention_impl="sdpa", **NO_DROPOUT))
    split.load_state_dict(fused.state_dict())
    split = split.to(device).train()
    # Eager, the flex path runs its math kernel (the lse merge); FlexAttention itself: section flex_op.
    lse = switchbert.models.build_model(model_config(family, opts.size, attention_impl="flex", **NO_DROPOUT))
    lse.load_state_dict(fused.state_dict())
    lse = lse.to(device).train()
    for m in (fused, ref, split, lse):
        m.set_temperature(1.0)
    batch = controlled_batch(fused.config, opts.check_batch, device)
    fp32, bf16 = autocast_for(device, torch.float32), autocast_for(device, torch.bfloat16)
    result: dict[str, Any] = {}
    # The float64 truth: the fused path in float64 (tests/ prove fused == reference there to 1e-10).
    # Gradients of a random model can be ill-conditioned (a bias feeding a LayerNorm of near-constant
    # input): then both float32 paths sit far from the truth and from each other, so the gradient checks
    # ask that the fused path be no further from float64 than the reference path (2x + a floor).
    truth_model = copy.deepcopy(fused).double()
    batch64 = copy.copy(batch)
    batch64.region_feats, batch64.region_boxes = batch.region_feats.double(), batch.region_boxes.double()
    with fixed_gumbel_noise(device, seed=1234) as reseed:
        truth = train_pass(truth_model, batch64, fp32, reseed)
        del truth_model
        f32, r32 = train_pass(fused, batch, fp32, reseed), train_pass(ref, batch, fp32, reseed)
        fb, rb = train_pass(fused, batch, bf16, reseed), train_pass(ref, batch, bf16, reseed)
        s32, sb = train_pass(split, batch, fp32, reseed), train_pass(split, batch, bf16, reseed)
        l32, lb = train_pass(lse, batch, fp32, reseed), train_pass(lse, batch, bf16, reseed)
    for dt, s_, l_, r in (("fp32", s32, l32, r32), ("bf16", sb, lb, rb)):
        result[f"train_{dt}_sdpa_vs_ref"] = compare(s_, r)
        result[f"train_{dt}_sdpa_vs_f64"] = compare(s_, truth)
        result[f"train_{dt}_flex_vs_ref"] = compare(l_, r)
        result[f"train_{dt}_flex_vs_f64"] = compare(l_, truth)
    result["train_fp32_fused_vs_ref"] = compare(f32, r32)
    result["train_fp32_fused_vs_f64"] = compare(f32, truth)
    result["train_fp32_ref_vs_f64"] = compare(r32, truth)
    result["train_bf16_fused_vs_ref"] = compare(fb, rb)
    result["train_bf16_fused_vs_f64"] = compare(fb, truth)
    result["train_bf16_ref_vs_f64"] = compare(rb, truth)
    fused.eval(), ref.eval()
    with torch.no_grad():
        for name, ac in (("eval_fp32", fp32), ("eval_bf16", bf16)):
            with ac:
                a, b = fused(batch), ref(batch)
            vt, vr = a.text_mask[..., None], a.region_mask[..., None]
            same_routes = all(bool((x.sab_choice == y.sab_choice).all()) and
                              (x.sib_choice is None or bool((x.sib_choice == y.sib_choice).all()))
                              for x, y in zip(a.routes, b.routes))
            result[name] = dict(out_max_abs=max(float(((a.text_hidden - b.text_hidden) * vt).abs().max()),
                                                float(((a.region_hidden - b.region_hidden) * vr).abs().max())),
                                same_routes=same_routes)
    def no_worse(dt: str, what: str, floor: float, impl: str = "fused") -> bool:
        return result[f"train_{dt}_{impl}_vs_f64"][what] <= 2 * result[f"train_{dt}_ref_vs_f64"][what] + floor

    checks = {
        "train_fp32 outputs fused vs reference atol 1e-4": result["train_fp32_fused_vs_ref"]["out_max_abs"] <= 1e-4,
        "train_fp32 gradients: fused within 2x of reference's distance to float64": no_worse("fp32", "grad_rel", 1e-5),
        "eval_fp32 outputs atol 1e-4": result["eval_fp32"]["out_max_abs"] <= 1e-4,
        "eval_fp32 same routes": result["eval_fp32"]["same_routes"],
        "train_bf16 outputs: fused within 2x of reference's distance to float64": no_worse("bf16", "out_rel", 1e-3),
        "train_bf16 gradients: fused within 2x of reference's distance to float64": no_worse("bf16", "grad_rel", 1e-3),
        "eval_bf16 outputs atol 5e-2": result["eval_bf16"]["out_max_abs"] <= 5e-2,
        "sdpa path: train_fp32 outputs vs reference atol 1e-4": result["train_fp32_sdpa_vs_ref"]["out_max_abs"] <= 1e-4,
        "sdpa path: train_fp32 gradients within 2x of reference's distance to float64":
            no_worse("fp32", "grad_rel", 1e-5, "sdpa"),
        "sdpa path: train_bf16 outputs within 2x of reference's distance to float64":
            no_worse("bf16", "out_rel", 1e-3, "sdpa"),
        "sdpa path: train_bf16 gradients within 2x of reference's distance to float64":
            no_worse("bf16", "grad_rel", 1e-3, "sdpa"),
        "flex path (eager, math kernel): train_fp32 outputs vs reference atol 1e-4":
            result["train_fp32_flex_vs_ref"]["out_max_abs"] <= 1e-4,
        "flex path (eager, math kernel): train_fp32 gradients within 2x of reference's distance to float64":
            no_worse("fp32", "grad_rel", 1e-5, "flex"),
        "flex path (eager, math kernel): train_bf16 gradients within 2x of reference's distance to float64":
            no_worse("bf16", "grad_rel", 1e-3, "flex"),
    }
    result["checks"] = checks
    result["passed"] = all(checks.values())
    return result


def correctness_md(r: dict[str, Any]) -> str:
    lines = ["| comparison | outputs max abs | outputs rel | gradients rel (all) | worst parameter (rel) |",
             "|---|---:|---:|---:|---|"]
    for k in (f"train_{dt}_{c}" for dt in ("fp32", "bf16")
              for c in ("fused_vs_ref", "fused_vs_f64", "ref_vs_f64", "sdpa_vs_ref", "sdpa_vs_f64",
                        "flex_vs_ref", "flex_vs_f64")):
        v = r[k]
        lines.append(f"| {k} | {v['out_max_abs']:.2e} | {v['out_rel']:.2e} | {v['grad_rel']:.2e} | "
                     f"{v['worst_param']} ({v['worst_param_rel']:.1e}) |")
    for k in ("eval_fp32", "eval_bf16"):
        lines.append(f"| {k} (same routes: {r[k]['same_routes']}) | {r[k]['out_max_abs']:.2e} | | | |")
    lines += ["", "| check | passed |", "|---|---|"] + [f"| {k} | {v} |" for k, v in r["checks"].items()]
    return "\n".join(lines)


# -- Switch-BERT vs UNITER step -------------------------------------------------------------------------

FUSED, SDPA, UNITER = ("switchbert (soft, 4 modes, SIB)", "switchbert, sdpa path (3 SDPA calls)",
                        "uniter arch (J only, no SIB)")
FLEX = "switchbert, flex path (2 block attentions + lse merge)"
SWITCH_ROWS = {"fused": FUSED, "sdpa": SDPA, "flex": FLEX}


def switch_step(opts: argparse.Namespace, compiled: bool, impls: tuple[str, ...] = ("fused", "sdpa", "flex")
                ) -> dict[str, Any]:
    """fwd + bwd ms of Switch-BERT (the ``impls`` attention paths, and the reference path when eager) and
    our UNITER architecture.

    Compiled, each attention path is its own section (``impls`` of one): compiling a base-size model takes
    minutes, and a run cut off by the device's time limit then keeps the fused path's figures.
    """
    device, autocast = opts.device, autocast_for(opts.device, DTYPES[opts.dtype])
    # Eager, the flex row runs the math kernel (FlexAttention is fused only under torch.compile).
    variants = {name: ("switchbert", {"attention_impl": impl}) for impl, name in SWITCH_ROWS.items() if impl in impls}
    variants[UNITER] = ("uniter", {})
    if not compiled:
        variants["switchbert, reference path (4 masked passes)"] = ("switchbert", {"attention_impl": "reference"})
    fns, compile_s = {}, {}
    for name, (family, over) in variants.items():
        torch.manual_seed(0)
        model = switchbert.models.build_model(model_config(family, opts.size, **over)).to(device).train()
        model.set_temperature(1.0)
        batch = controlled_batch(model.config, opts.batch_size, device)
        fn = ours_step_fn(torch.compile(model) if compiled else model, batch, autocast)
        if compiled:  # the first calls compile; time them separately
            t0 = time.perf_counter()
            fn(), fn()
            bench_hf.sync(device)
            compile_s[name] = time.perf_counter() - t0
        fns[name] = fn
    ms = interleaved_median_ms(fns, opts.warmup, opts.steps, device)
    ref = ms[UNITER]
    best = min(v for k, v in ms.items() if k in SWITCH_ROWS.values())
    return dict(ms=ms, vs_uniter={k: v / ref for k, v in ms.items()}, compile_s=compile_s,
                goal_1_met=best / ref <= 1.10)


def switch_md(r: dict[str, Any], batch_size: int) -> str:
    lines = ["| variant | ms/step | samples/s | vs uniter arch |", "|---|---:|---:|---:|"]
    for k, v in r["ms"].items():
        lines.append(f"| {k} | {v:.1f} | {batch_size / v * 1e3:.0f} | {r['vs_uniter'][k]:.2f}x |")
    lines.append(f"\ngoal 1 (switchbert, fastest of fused/sdpa/flex, <= 1.10x uniter arch): "
                 f"{'met' if r['goal_1_met'] else 'NOT met'}")
    if r["compile_s"]:
        lines.append("compile (first two calls), s: " + ", ".join(f"{k} {v:.0f}" for k, v in r["compile_s"].items()))
    return "\n".join(lines)


# -- the flex path's op: FlexAttention compiled on the device ---------------------------------------------

def flex_op(opts: argparse.Namespace) -> dict[str, Any]:
    """The flex op (two FlexAttention calls with their lse, merged) compiled, against the fused op.

    Correctness: outputs and gradients of q, k, v and the mode coefficients, in fp32 and bf16, against
    the fused op in float64, at the controlled shape with one text-only sample (an empty region block)
    and random coefficients. Timing: fwd + bwd of the op alone at the timing batch, each path eager and
    compiled (the flex op only compiled: eager FlexAttention is an unfused reference).
    """
    from switchbert.layers.block_attention import block_mixed_attention, split_mixed_attention
    from switchbert.layers.lse_attention import lse_mixed_attention

    device = opts.device
    cfg = model_config("switchbert", opts.size)
    H, hd, T, N = cfg.num_heads, cfg.hidden_size // cfg.num_heads, 38, 75

    def inputs(B: int, dtype: torch.dtype, seed: int) -> tuple[list[Tensor], Tensor, Tensor]:
        g = torch.Generator().manual_seed(seed)
        q, k, v = (torch.randn(B, H, N, hd, generator=g, dtype=torch.float64) for _ in range(3))
        valid = torch.ones(B, N, dtype=torch.bool)
        valid[0, T:] = False  # text-only sample
        valid[1, 30:T] = False  # padded text
        valid[2, T + 20:] = False  # padded regions
        coefs = torch.rand(B, N, 3, generator=g, dtype=torch.float64)
        return ([t.to(device, dtype) for t in (q, k, v)], valid.to(device), coefs.to(device, torch.float32))

    # FlexAttention has no CPU backward (torch 2.13): off a GPU (--smoke) the section checks its
    # mechanics with the math kernel, uncompiled, and says so.
    on_gpu = device.startswith("cuda")
    kernel = "flex" if on_gpu else "math"

    def lse_op(q, k, v, valid, c):
        return lse_mixed_attention(q, k, v, valid, T, c, kernel=kernel)

    flex = torch.compile(lse_op) if on_gpu else lse_op

    def grads(fn, qkv, valid, coefs, w):
        xs = [t.detach().clone().requires_grad_(True) for t in qkv]
        c = coefs.detach().clone().requires_grad_(True)
        out = fn(*xs, valid, c)
        (out.float() * w).sum().backward()
        return [out.detach().double()] + [x.grad.double() for x in xs] + [c.grad.double()]

    result: dict[str, Any] = {"kernel": kernel, "compiled": on_gpu}
    B = max(opts.check_batch, 3)
    qkv, valid, coefs = inputs(B, torch.float64, 5)
    w = torch.randn(B, H, N, hd, generator=torch.Generator().manual_seed(6), dtype=torch.float64).to(device)
    truth = grads(lambda q, k, v, m, c: block_mixed_attention(q, k, v, m, T, c.double()),
                  qkv, valid, coefs.double(), w)
    names = ("out", "dq", "dk", "dv", "dcoefs")
    for dt, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        low = [t.to(dtype) for t in qkv]
        for impl, fn in (("flex", flex),
                         ("fused", lambda q, k, v, m, c: block_mixed_attention(q, k, v, m, T, c))):
            got = grads(fn, low, valid, coefs, w.to(torch.float32))
            result[f"{dt}_{impl}_vs_f64"] = {n: rel_err(a, b) for n, a, b in zip(names, got, truth)}
    result["checks"] = {f"{dt} flex within 2x (+1e-3) of the fused op's distance to float64 ({n})":
                        result[f"{dt}_flex_vs_f64"][n] <= 2 * result[f"{dt}_fused_vs_f64"][n] + 1e-3
                        for dt in ("fp32", "bf16") for n in names}
    result["passed"] = all(result["checks"].values())

    dtype = DTYPES[opts.dtype]
    qkv, valid, coefs = inputs(opts.batch_size, dtype, 7)
    xs = [t.detach().requires_grad_(True) for t in qkv]
    c = coefs.requires_grad_(True)

    def timed(fn) -> Callable[[], None]:
        def step() -> None:
            fn(*xs, valid, c).float().sum().backward()
        return step

    ops = {"fused": lambda q, k, v, m, cc: block_mixed_attention(q, k, v, m, T, cc),
           "sdpa": lambda q, k, v, m, cc: split_mixed_attention(q, k, v, m, T, cc)}
    fns = {f"{k} eager": timed(f) for k, f in ops.items()}
    if on_gpu:
        fns.update({f"{k} compiled": timed(torch.compile(f)) for k, f in ops.items()})
    fns["flex compiled" if on_gpu else "flex (math kernel, eager)"] = timed(flex)
    for fn in fns.values():  # compile outside the timing
        fn()
    result["op_ms"] = interleaved_median_ms(fns, opts.warmup, opts.steps, device)
    return result


def flex_op_md(r: dict[str, Any]) -> str:
    names = ("out", "dq", "dk", "dv", "dcoefs")
    lines = ["| vs float64 fused op (rel) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for k in (f"{dt}_{impl}_vs_f64" for dt in ("fp32", "bf16") for impl in ("flex", "fused")):
        lines.append(f"| {k} | " + " | ".join(f"{r[k][n]:.2e}" for n in names) + " |")
    lines += ["", f"kernel {r['kernel']}, compiled {r['compiled']}; checks passed: {r['passed']}", "",
              "| op (fwd + bwd) | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in r["op_ms"].items()]
    return "\n".join(lines)


# -- linear layers against the matmul peak ----------------------------------------------------------------

def linear_peak(opts: argparse.Namespace) -> dict[str, Any]:
    device = opts.device
    n = opts.peak_n
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    peak_ms = interleaved_median_ms({"mm": lambda: a @ b}, 2, opts.steps, device)["mm"]
    peak = 2 * n ** 3 / (peak_ms * 1e-3) / 1e12
    c = model_config("uniter", opts.size)
    D, F_ = c.hidden_size, c.intermediate_size
    M = opts.batch_size * (bench_hf.TEXT + bench_hf.REGIONS + 1)  # rows: every token of the batch
    layers = nn.ModuleList([nn.Linear(D, D) for _ in range(4)] + [nn.Linear(D, F_), nn.Linear(F_, D)]).to(device)
    x = torch.randn(M, D, device=device, requires_grad=True)
    h = torch.randn(M, F_, device=device, requires_grad=True)
    flops = 3 * 2 * M * (4 * D * D + 2 * D * F_)  # fwd + bwd (grad input + grad weight) of one layer's linears

    def step(weights_bf16: bool) -> Callable[[], None]:
        mods = copy.deepcopy(layers).to(torch.bfloat16) if weights_bf16 else layers
        xi = x.detach().to(torch.bfloat16).requires_grad_() if weights_bf16 else x
        hi = h.detach().to(torch.bfloat16).requires_grad_() if weights_bf16 else h

        def fn() -> None:
            with autocast_for(device, torch.bfloat16):
                out = sum(m(xi).float().sum() for m in mods[:5]) + mods[5](hi).float().sum()
            out.backward()
            for m in mods:
                m.zero_grad(set_to_none=True)

        return fn

    ms = interleaved_median_ms({"fp32 weights + autocast (as training)": step(False), "bf16 weights": step(True)},
                               2, opts.steps, device)
    rows = {k: dict(ms=v, tflops=flops / (v * 1e-3) / 1e12, of_peak=flops / (v * 1e-3) / 1e12 / peak)
            for k, v in ms.items()}
    return dict(peak_n=n, peak_tflops=peak, rows_m=M, layer_linears=rows,
                goal_3_met=max(r["of_peak"] for r in rows.values()) >= 0.5)


def linear_md(r: dict[str, Any]) -> str:
    lines = [f"bf16 matmul peak ({r['peak_n']}^3): {r['peak_tflops']:.3g} TFLOP/s; one layer's six linears at "
             f"{r['rows_m']} rows, fwd + bwd:", "| linears | ms | TFLOP/s | of peak |", "|---|---:|---:|---:|"]
    for k, v in r["layer_linears"].items():
        lines.append(f"| {k} | {v['ms']:.2f} | {v['tflops']:.3g} | {100 * v['of_peak']:.0f}% |")
    lines.append(f"\ngoal 3 (linears >= 50% of peak): {'met' if r['goal_3_met'] else 'NOT met'}")
    return "\n".join(lines)


# -- host syncs -------------------------------------------------------------------------------------------

def host_syncs(opts: argparse.Namespace) -> dict[str, Any]:
    """Runs pretraining steps with CUDA sync debugging on; returns the distinct Python lines that synced."""
    if not opts.device.startswith("cuda"):
        return dict(skipped="needs CUDA (torch.cuda.set_sync_debug_mode)")
    ns = bench_args(opts, steps=1, warmup=0, images=max(40, opts.images // 10), batch_size=min(opts.batch_size, 32))
    variants = {"switchbert": ("switchbert", True)}
    sites: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            bench_pretrain_step.run(ns, variants)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        if "synchroniz" in str(w.message):
            key = f"{w.filename}:{w.lineno}"
            sites[key] = sites.get(key, 0) + 1
    return dict(sites=dict(sorted(sites.items(), key=lambda kv: -kv[1])))


# -- the issue's goals, from the sections' results (no extra device time) ---------------------------------

def goals_summary(sections: dict[str, Any]) -> list[str]:
    """One line per performance goal (docs/performance.md), read off the sections that ran ("n/a" where one is missing)."""

    def result(name: str) -> Optional[Any]:
        sec = sections.get(name, {})
        return sec.get("result") if sec.get("status") == "ok" else None

    lines = []
    sw = {mode: result(f"switch_{mode}") for mode in ("eager", "compiled", "compiled_sdpa", "compiled_flex")}
    parts = []
    impl_of = {v: k for k, v in SWITCH_ROWS.items()}
    for mode, r in sw.items():
        for k, v in (r["vs_uniter"].items() if r else ()):
            if k in impl_of:
                parts.append(f"{impl_of[k]} {mode.split('_')[0]} {v:.2f}x")
    met = any(r and r["goal_1_met"] for r in sw.values())  # each ratio is within one section's run
    verdict = ("met" if met else "NOT met") if parts else "n/a (switch sections did not run)"
    lines.append(f"1. Switch-BERT step <= 1.10x our UNITER: {verdict}" + (f" ({', '.join(parts)})" if parts else ""))
    hf = result("hf")
    if hf:
        rows = {row["name"]: row["ms"] for row in hf}
        vb, lx = rows.get("hf VisualBertModel"), rows.get("hf LxmertModel")
        uniter_eager = rows.get("ours uniter")
        compiled = sw["compiled"]["ms"].get("uniter arch (J only, no SIB)") if sw["compiled"] else None
        # "compiled": our UNITER from the switch_compiled section (same device, shape and run).
        speed = [f"eager {vb / uniter_eager:.2f}x"] + ([f"compiled {vb / compiled:.2f}x"] if compiled else [])
        best = max(vb / uniter_eager, vb / compiled if compiled else 0.0)
        lines.append(f"2. our UNITER >= 2x faster than HF VisualBertModel (eager): {'met' if best >= 2 else 'NOT met'} "
                     f"({', '.join(speed)}); our LXMERT vs HF LxmertModel {lx / rows['ours lxmert']:.2f}x, "
                     f"ViLBERT {rows['ours vilbert']:.1f} ms (no HF ViLBERT)")
    else:
        lines.append("2. our UNITER vs HF VisualBertModel: n/a (hf section did not run)")
    lp = result("linear_peak")
    if lp:
        shares = ", ".join(f"{k} {100 * v['of_peak']:.0f}%" for k, v in lp["layer_linears"].items())
        lines.append(f"3. linears >= 50% of the bf16 peak ({lp['peak_tflops']:.3g} TFLOP/s): "
                     f"{'met' if lp['goal_3_met'] else 'NOT met'} ({shares})")
    pre = result("pretrain")
    if pre:
        lines.append("4. pretraining step: " + "; ".join(
            f"{row['name']} {row['samples_per_s']:.0f} samples/s, data {100 * row['data_share']:.0f}%, "
            f"2.7M x 10 epochs in {row['paper_hours']:.0f} h" for row in pre["rows"][:2]))
    inf = result("inference")
    if inf:
        e2e = inf["end_to_end"]
        lines.append(f"5. hard-route inference: switchbert {e2e['switchbert']:.1f} ms vs uniter {e2e['uniter']:.1f} ms "
                     f"per batch ({e2e['switchbert'] / e2e['uniter']:.2f}x)")
    syncs = result("host_syncs")
    if syncs and "sites" in syncs:
        lines.append(f"host syncs in the pretraining step: {len(syncs['sites'])} sites")
    return lines


# -- driver -----------------------------------------------------------------------------------------------

def bench_args(opts: argparse.Namespace, **override: Any) -> argparse.Namespace:
    """The Namespace the bench_* scripts' ``run`` functions take."""
    base = dict(device=opts.device, dtype=opts.dtype, batch_size=opts.batch_size, steps=opts.steps,
                warmup=opts.warmup, compile=False, size=opts.size, threads=opts.threads, workers=opts.workers,
                images=opts.images)
    base.update(override)
    return argparse.Namespace(**base)


def environment(opts: argparse.Namespace) -> dict[str, Any]:
    env = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
               device=opts.device, line=bench_hf.env_line(opts.device), cpu=bench_hf.cpu_model(),
               cpu_count=os.cpu_count())
    if opts.device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   cuda=torch.version.cuda)
    try:
        import transformers  # noqa: PLC0415 - optional, for the hf section
        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of the timings")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--check-batch", type=int, default=16, help="batch of the correctness section")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--size", choices=("tiny", "small", "base"), default="base")
    p.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 2)))
    p.add_argument("--images", type=int, default=1200, help="synthetic images for the pretraining section")
    p.add_argument("--peak-n", type=int, default=8192)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=330.0, help="skip sections that would start after this")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile section")
    p.add_argument("--only", default="", help="comma-separated sections to run (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, CPU-friendly: checks the script end to end")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.batch_size, args.check_batch, args.steps, args.warmup = "tiny", 4, 4, 2, 1
        args.images, args.peak_n, args.workers = 30, 512, 1
        args.threads = args.threads or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict[str, Any] = {"args": vars(args), "environment": environment(args), "sections": {}}
    md: list[str] = [f"# gpu_check results\n\n{results['environment']['line']}\n\ncommand: python benchmarks/gpu_check.py "
                     f"{' '.join(argv if argv is not None else __import__('sys').argv[1:])}\n"]

    sections: list[tuple[str, Callable[[], Any], Callable[[Any], str], float]] = [
        # (name, run, to markdown, seconds that must remain to start it)
        ("correctness", lambda: correctness(args), correctness_md, 0),
        ("switch_eager", lambda: switch_step(args, compiled=False), lambda r: switch_md(r, args.batch_size), 0),
        ("linear_peak", lambda: linear_peak(args), linear_md, 0),
        ("flex_op", lambda: flex_op(args), flex_op_md, 0 if args.smoke else 60),
        ("hf", lambda: bench_hf.run(bench_args(args)), bench_hf.format_table, 30),
        ("inference", lambda: bench_inference.run(bench_args(args, steps=max(args.steps, 5))),
         lambda r: bench_inference.format_tables(r, args.batch_size), 30),
        ("pretrain", lambda: bench_pretrain_step.run(bench_args(args)), bench_pretrain_step.format_table, 60),
        ("host_syncs", lambda: host_syncs(args),
         lambda r: "\n".join(f"- `{k}`: {v}x" for k, v in r.get("sites", {}).items()) or str(r), 20),
        ("switch_compiled", lambda: switch_step(args, compiled=True, impls=("fused",)),
         lambda r: switch_md(r, args.batch_size), 0 if args.smoke else 150),
        ("switch_compiled_sdpa", lambda: switch_step(args, compiled=True, impls=("sdpa",)),
         lambda r: switch_md(r, args.batch_size), 0 if args.smoke else 120),
        ("switch_compiled_flex", lambda: switch_step(args, compiled=True, impls=("flex",)),
         lambda r: switch_md(r, args.batch_size), 0 if args.smoke else 120),
    ]
    only = {s for s in args.only.split(",") if s}
    for name, fn, to_md, need in sections:
        if (only and name not in only) or (name.startswith("switch_compiled") and args.no_compile):
            continue
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s - need:
            results["sections"][name] = {"status": "skipped", "reason": f"budget: {elapsed:.0f} s used"}
            md.append(f"## {name}\n\nskipped (time budget: {elapsed:.0f} s of {args.budget_s:.0f} s used)\n")
            continue
        t0 = time.perf_counter()
        print(f"[{elapsed:6.1f} s] {name} ...", flush=True)
        try:
            r = fn()
            text = to_md(r)
            results["sections"][name] = {"status": "ok", "seconds": time.perf_counter() - t0, "result": r}
            md.append(f"## {name} ({time.perf_counter() - t0:.0f} s)\n\n{text}\n")
            print(text, flush=True)
        except Exception as e:  # noqa: BLE001 - every section is independent: record and go on
            tb = traceback.format_exc()
            results["sections"][name] = {"status": "error", "error": repr(e), "traceback": tb}
            md.append(f"## {name}\n\nERROR: `{e!r}`\n\n```\n{tb[-3000:]}\n```\n")
            print(f"{name} failed: {e!r}", flush=True)
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
        (out / "gpu_check.md").write_text("\n".join(md))
    total = time.perf_counter() - t_start
    results["total_s"] = total
    goals = goals_summary(results["sections"])
    results["goals"] = goals
    md.append("## performance goals (docs/performance.md)\n\n" + "\n".join(f"- {g}" for g in goals) + "\n")
    print("\n".join(goals), flush=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "gpu_check.md").write_text("\n".join(md) + f"\ntotal {total:.0f} s\n")
    status = {k: v["status"] for k, v in results["sections"].items()}
    print(f"done in {total:.0f} s: {status}; results in {out}/gpu_check.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
