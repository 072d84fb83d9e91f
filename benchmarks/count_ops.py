"""Counts the kernel-launching ops of one eager training step (forward + backward), per model.

On a GPU every such op is at least one kernel launch of a few microseconds, so in eager mode the count
bounds the launch overhead. CPU profiling sees the same ops: the count is the number of leaf aten ops
(ops that call no other aten op) minus those that only make a view or allocate (no kernel on a GPU) and
the output fills of CPU reductions and host-side scalar conversions. It is an estimate of GPU launches: no GPU profile was taken yet.

    python benchmarks/count_ops.py                                  # switchbert-base vs uniter-base, batch 2
    python benchmarks/count_ops.py --top 25                         # and where Switch-BERT's ops come from
    python benchmarks/count_ops.py --impl fused sdpa flex --batch-size 2
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from torch.profiler import ProfilerActivity, profile

import switchbert
from switchbert.data.random_batch import random_batch

# Ops that only create a view, alias or uninitialised storage: no kernel on a GPU.
NO_KERNEL = {
    "aten::view", "aten::_unsafe_view", "aten::as_strided", "aten::t", "aten::transpose", "aten::permute",
    "aten::expand", "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select", "aten::detach",
    "aten::alias", "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::unbind", "aten::split",
    "aten::chunk", "aten::narrow", "aten::reshape", "aten::lift_fresh", "aten::_reshape_alias",
    "aten::resolve_conj", "aten::resolve_neg", "aten::view_as", "aten::expand_as", "aten::split_with_sizes",
    "aten::unflatten", "aten::flatten", "aten::diagonal", "aten::numpy_T", "aten::movedim",
    "aten::_unsafe_split", "aten::result_type", "aten::is_nonzero", "aten::contiguous", "aten::to",
    "aten::_to_copy", "aten::type_as", "aten::_has_compatible_shallow_copy_type", "aten::set_",
    "aten::_local_scalar_dense", "aten::item", "aten::size", "aten::stride", "aten::dim", "aten::resize_",
    "aten::scalar_tensor", "aten::new_empty", "aten::new_empty_strided",
}
# CPU reductions first fill their output; a GPU reduction kernel does not, so those fills are not counted.
REDUCTIONS = {"aten::sum", "aten::mean", "aten::amax", "aten::amin", "aten::max", "aten::min", "aten::prod",
              "aten::argmax", "aten::argmin", "aten::norm", "aten::linalg_vector_norm"}


def leaf_kernel_ops(prof) -> Counter:
    """Counter of leaf aten op names that would launch a kernel."""
    counts: Counter = Counter()
    for ev in prof.events():
        if not ev.name.startswith("aten::") or ev.name in NO_KERNEL:
            continue
        if any(c.name.startswith("aten::") and c.name not in NO_KERNEL for c in ev.cpu_children):
            continue  # a composite: its children are counted
        if ev.name in ("aten::fill_", "aten::zero_") and ev.cpu_parent is not None and ev.cpu_parent.name in REDUCTIONS:
            continue
        if ev.name == "aten::copy_" and ev.input_shapes and ev.input_shapes[0] == []:
            continue  # a Python scalar converted on the host (a wrapped number: no GPU kernel)
        counts[ev.name] += 1
    return counts


def step_ops(preset: str, batch_size: int, overrides: dict) -> Counter:
    torch.manual_seed(0)
    model = switchbert.create_model(preset, **overrides).train()
    model.set_temperature(1.0)
    batch = random_batch(model.config, batch_size, num_text=38, num_regions=36, padded=True)

    def step():
        out = model(batch, validate=False)
        (out.pooled.sum() + out.text_hidden.sum() + out.region_hidden.sum()).backward()

    step()  # warm-up: lazy initialisation is not part of the step
    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    return leaf_kernel_ops(prof)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base", choices=["tiny", "small", "base"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--impl", nargs="+", default=["fused"], help="Switch-BERT attention_impl values to count")
    p.add_argument("--top", type=int, default=0, help="print the N most frequent ops of each Switch-BERT row")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    base = step_ops(f"uniter-{args.size}", args.batch_size, {})
    print(f"ops per eager training step (fwd + bwd), {args.size}, batch {args.batch_size}, "
          f"38 text + 37 region tokens, torch {torch.__version__}")
    print(f"{'model':<34} {'ops':>6} {'vs uniter':>10}")
    print(f"{'uniter-' + args.size:<34} {sum(base.values()):>6} {1.0:>9.2f}x")
    for impl in args.impl:
        c = step_ops(f"switchbert-{args.size}", args.batch_size, {"attention_impl": impl})
        print(f"{'switchbert-' + args.size + ' (' + impl + ')':<34} {sum(c.values()):>6} "
              f"{sum(c.values()) / sum(base.values()):>9.2f}x")
        if args.top:
            diff = c - base
            for name, n in diff.most_common(args.top):
                print(f"    {name:<40} +{n}")


if __name__ == "__main__":
    main()
