"""Training step of our baselines against HF transformers' models of the same size (performance goal 2, docs/performance.md).

One step = forward + a loss on every output state + backward (+ zeroing grads), no optimizer, on the
same random inputs for every model: T = 38 text tokens, 36 regions + the IMG token (HF models are
given our 37-token region sequence, IMG included, as in tests/test_convert_hf.py). All weights are
random, built from configs: nothing is downloaded.

Rows:
    uniter        our UNITER architecture (12 joint layers) -- the reference row ("vs uniter")
    visualbert    ours  vs  HF ``VisualBertModel`` (same sizes, eager attention: HF has no SDPA for it)
    lxmert        ours  vs  HF ``LxmertModel`` (9 text + 5 region + 5 cross layers)
    vilbert       ours only: transformers has no ViLBERT
    hf bert-sdpa  HF ``BertModel`` with SDPA on the 75 concatenated tokens: a plain-joint-attention
                  lower bound (no region embedding, no poolers)
Each model is timed in interleaved rounds (one step of each per round, median over rounds), so that
load on a shared machine hits every row alike.

Sizes: ``--size base`` is the controlled setting (768 wide, 12 heads, 3072 FFN); ``small`` keeps every
layer count and narrows to 384/6/1536 (a 2-core CPU finishes in ~1-2 minutes); ``tiny`` uses the
``*-tiny`` presets (smoke runs).

    python benchmarks/bench_hf.py                                   # CPU, small, batch 8
    python benchmarks/bench_hf.py --device cuda --dtype bf16 --size base --batch-size 256 --steps 10
    python benchmarks/bench_hf.py --device cuda --dtype bf16 --size base --batch-size 256 --compile

transformers is needed only here (``pip install transformers``); the library itself never imports it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

import switchbert
from switchbert.config import ModelConfig
from switchbert.layers.embeddings import add_img_token, region_token_mask
from switchbert.data.random_batch import random_batch

TEXT, REGIONS = 38, 36  # the controlled shape: 38 text tokens, 36 regions (+ the IMG token)
SMALL: dict[str, Any] = dict(hidden_size=384, num_heads=6, intermediate_size=1536, pooler_size=512)
OURS = ("uniter", "visualbert", "lxmert", "vilbert")


# -- shared measurement helpers (gpu_check.py and the other benchmarks reuse these) ------------------

def env_line(device: str) -> str:
    """Device, torch version and date, for every printed table."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
    else:
        name = cpu_model()
    return (f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
            f"date {datetime.date.today().isoformat()}, load {load_average()}")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (lscpu's 'Model name'), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """1/5/15-minute load average (the CPU is shared: timings are only comparable within a run)."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_median_ms(steps: dict[str, Callable[[], None]], warmup: int, rounds: int, device: str,
                          ) -> dict[str, float]:
    """Median milliseconds per call of each function, timed one call each per round.

    Interleaving means a burst of load from a neighbour slows one round of every row, not every
    step of one row, so ratios measured in the same run stay meaningful on a shared machine.
    """
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def autocast_for(device: str, dtype: torch.dtype):
    """bf16 autocast on the device (CPU autocast works too, slowly); a no-op for float32."""
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def add_common_args(p: argparse.ArgumentParser, batch_size: int = 8, steps: int = 5) -> None:
    """The flags every benchmark script shares."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="bf16 = autocast to bfloat16 (weights stay float32, as in training)")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--steps", type=int, default=steps, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--size", choices=("tiny", "small", "base"), default="small",
                   help="base = BERT-base (controlled setting); small = 384 wide, same depths; tiny = *-tiny presets")
    # One thread by default: on a shared, loaded CPU every multi-threaded op waits for a descheduled
    # OpenMP thread (measured here: a tiny model's step took 1.5 s with 2 threads, 35 ms with 1).
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0 = torch's default)")


def model_config(family: str, size: str, **overrides: Any) -> ModelConfig:
    """Our preset ``<family>-base`` (or ``-tiny``) at ``size``; family is e.g. 'uniter', 'switchbert'."""
    if size == "tiny":
        return switchbert.get_config(f"{family}-tiny", **overrides)
    extra = dict(SMALL) if size == "small" else {}
    return switchbert.get_config(f"{family}-base", **{**extra, **overrides})


def controlled_batch(config: ModelConfig, batch_size: int, device: str, padded: bool = True):
    """The controlled shape (38 text tokens, 36 regions), random ids and features."""
    return random_batch(config, batch_size, num_text=TEXT, num_regions=REGIONS, padded=padded, device=device)


def sq(x: Tensor) -> Tensor:
    """A loss that sends a gradient into every element (float32, so bf16 outputs lose nothing)."""
    return x.float().pow(2).mean()


# -- HF models -----------------------------------------------------------------------------------------

def import_transformers():
    """transformers, or a clear message: it is a benchmark-only dependency."""
    try:
        import transformers  # noqa: PLC0415 - benchmark-only dependency, imported on use
    except ImportError as e:
        raise SystemExit(f"bench_hf needs HF transformers for the comparison rows ({e}); "
                         "install it for the benchmark only: pip install transformers") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # configs only: never touch the network
    return transformers


def hf_common(c: ModelConfig) -> dict[str, Any]:
    """HF config fields of the same size as our config ``c``."""
    return dict(vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_attention_heads=c.num_heads,
                intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position,
                hidden_dropout_prob=c.hidden_dropout, attention_probs_dropout_prob=c.attention_dropout)


def hf_models(c_vb: ModelConfig, c_lx: ModelConfig) -> dict[str, tuple[nn.Module, str]]:
    """HF VisualBertModel, LxmertModel and BertModel (SDPA) of our sizes: name -> (model, kind)."""
    tf = import_transformers()
    out: dict[str, tuple[nn.Module, str]] = {}
    vb = tf.VisualBertConfig(num_hidden_layers=c_vb.num_layers, visual_embedding_dim=c_vb.region_feat_dim,
                             **hf_common(c_vb))
    out["hf VisualBertModel"] = (tf.VisualBertModel(vb), "visualbert")
    lx = tf.LxmertConfig(l_layers=c_lx.text_layers, r_layers=c_lx.region_layers, x_layers=c_lx.cross_layers,
                         visual_feat_dim=c_lx.region_feat_dim, visual_pos_dim=c_lx.region_box_dim,
                         **hf_common(c_lx))
    out["hf LxmertModel"] = (tf.LxmertModel(lx), "lxmert")
    # 75 positions are needed (tiny presets allow only 64 text positions).
    bert = tf.BertConfig(num_hidden_layers=c_vb.num_layers,
                         **{**hf_common(c_vb), "max_position_embeddings": max(c_vb.max_position, 128)})
    try:
        model = tf.BertModel(bert, add_pooling_layer=True, attn_implementation="sdpa")
    except TypeError:  # older transformers: the implementation is a config attribute
        bert._attn_implementation = "sdpa"
        model = tf.BertModel(bert)
    out["hf BertModel (sdpa, 75 tok)"] = (model, "bert")
    return out


def hf_step_fn(model: nn.Module, kind: str, batch, box_dim: int, autocast) -> Callable[[], None]:
    """fwd + loss + bwd of an HF model on our batch (regions with our IMG token prepended)."""
    feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    vmask = region_token_mask(batch).long()
    text = dict(input_ids=batch.text_ids, attention_mask=batch.text_mask.long(),
                token_type_ids=torch.zeros_like(batch.text_ids))
    if kind == "bert":
        # The same 75-token sequence length as the single-stream models, all through one encoder.
        B, T = batch.text_ids.shape
        D = model.config.hidden_size
        emb = torch.randn(B, T + feats.shape[1], D, device=batch.text_ids.device)
        mask = torch.cat([batch.text_mask.long(), vmask], dim=1)

    def step() -> None:
        with autocast:
            if kind == "visualbert":
                out = model(**text, visual_embeds=feats, visual_attention_mask=vmask)
                loss = sq(out.last_hidden_state) + sq(out.pooler_output)
            elif kind == "lxmert":
                out = model(**text, visual_feats=feats, visual_pos=boxes[..., :box_dim], visual_attention_mask=vmask)
                loss = sq(out.language_output) + sq(out.vision_output) + sq(out.pooled_output)
            else:
                out = model(inputs_embeds=emb, attention_mask=mask)
                loss = sq(out.last_hidden_state) + sq(out.pooler_output)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def ours_step_fn(model: nn.Module, batch, autocast) -> Callable[[], None]:
    """fwd + loss + bwd of one of our models (validation off: the batch was checked once)."""

    def step() -> None:
        with autocast:
            out = model(batch, validate=False)
            loss = sq(out.text_hidden) + sq(out.region_hidden) + sq(out.pooled)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def maybe_compile(model: nn.Module, enabled: bool) -> nn.Module:
    return torch.compile(model) if enabled else model


# -- the benchmark -----------------------------------------------------------------------------------

def run(args: argparse.Namespace, include_hf: bool = True) -> list[dict[str, Any]]:
    """Times every row; returns one dict per row (name, ms, samples/s, params, ratios)."""
    device, dtype = args.device, DTYPES[args.dtype]
    autocast = autocast_for(device, dtype)
    torch.manual_seed(0)
    configs = {f: model_config(f, args.size) for f in OURS}
    batch = controlled_batch(configs["uniter"], args.batch_size, device)
    batch.validate(configs["uniter"].region_feat_dim)
    steps: dict[str, Callable[[], None]] = {}
    params: dict[str, int] = {}
    for family, c in configs.items():
        model = switchbert.models.build_model(c).to(device).train()
        params[f"ours {family}"] = sum(p.numel() for p in model.parameters())
        steps[f"ours {family}"] = ours_step_fn(maybe_compile(model, args.compile), batch, autocast)
    if include_hf:
        for name, (model, kind) in hf_models(configs["visualbert"], configs["lxmert"]).items():
            model = model.to(device).train()
            params[name] = sum(p.numel() for p in model.parameters())
            steps[name] = hf_step_fn(maybe_compile(model, args.compile), kind, batch,
                                     configs["lxmert"].region_box_dim, autocast)
    ms = interleaved_median_ms(steps, args.warmup, args.steps, device)
    ref = ms["ours uniter"]
    pairs = {"ours visualbert": "hf VisualBertModel", "ours lxmert": "hf LxmertModel"}
    rows = []
    for name, t in ms.items():
        hf = pairs.get(name)
        rows.append(dict(name=name, ms=t, samples_per_s=args.batch_size / t * 1e3, params_m=params[name] / 1e6,
                         vs_uniter=t / ref, hf_over_ours=(ms[hf] / t) if hf in ms else None))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | params (M) | ms/step | samples/s | vs ours uniter | HF time / ours |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        hf = f"{r['hf_over_ours']:.2f}x" if r["hf_over_ours"] is not None else ""
        if r["name"] == "ours vilbert":
            hf = "no HF ViLBERT"
        lines.append(f"| {r['name']} | {r['params_m']:.1f} | {r['ms']:.1f} | {r['samples_per_s']:.1f} | "
                     f"{r['vs_uniter']:.2f}x | {hf} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--no-hf", action="store_true", help="only our models (no transformers needed)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.no_hf:
        import_transformers()  # fail early with the install hint, before building anything
    rows = run(args, include_hf=not args.no_hf)
    print(f"training step (fwd + bwd), size {args.size}, batch {args.batch_size}, {TEXT} text + {REGIONS + 1} "
          f"region tokens, {args.dtype}, {'compiled' if args.compile else 'eager'}, median of {args.steps} "
          f"interleaved rounds")
    print(env_line(args.device))
    print(format_table(rows))
    print("HF time / ours > 1 means ours is faster. HF VisualBERT/LXMERT use eager attention (no SDPA support in "
          "transformers for them); ViLBERT has no HF implementation.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
