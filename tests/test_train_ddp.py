"""DDP on 2 CPU processes (gloo) equals one process with the same global batch: training losses,
validation, and evaluation gathered across ranks. Only rank 0 writes.

The model is a fixed architecture without dropout (UNITER-tiny): Gumbel noise and dropout masks are
drawn per process, so a switching model's noise differs between 1 and 2 processes (docs/training.md).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from switchbert.commands.train import evaluate_main, finetune_main
from tests.test_train_support import QUIET, make_synth, read_jsonl, synth_config, train_losses

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def overrides(synth, out) -> list[str]:
    return [f"data.root={synth}", f"output_dir={out}", "model.preset=uniter-tiny", "model.init_from=null",
            "model.overrides.hidden_dropout=0.0", "model.overrides.attention_dropout=0.0",
            "model.overrides.fusion_dropout=0.0", "train.batch_size=8", "train.grad_accum=2", "train.max_steps=3",
            "train.log_every=1", *QUIET]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    synth = make_synth(tmp_path_factory.mktemp("synth"))
    root = tmp_path_factory.mktemp("runs")
    single, ddp = root / "single", root / "ddp"
    assert finetune_main([synth_config("vqa"), *overrides(synth, single)]) == 0
    assert evaluate_main([str(single), "--splits", "val", "--no-progress"]) == 0
    # One torchrun launch: train, then evaluate in the same process group.
    script = root / "ddp_job.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from switchbert.commands.train import evaluate_main, finetune_main
        assert finetune_main({[synth_config("vqa"), *overrides(synth, ddp)]!r}) == 0
        assert evaluate_main({[str(ddp), "--splits", "val", "--no-progress"]!r}) == 0
        # RefExp leaves parameters without gradients (poolers, LXMERT's last text sub-layers): DDP must cope.
        assert finetune_main({[synth_config("refexp"), f"data.root={synth}", f"output_dir={root / 'refexp'}",
                               "model.preset=lxmert-tiny", "model.init_from=null", "train.batch_size=8",
                               "train.max_steps=2", "train.log_every=1", *QUIET]!r}) == 0
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return single, ddp, proc


def test_ddp_finds_unused_parameters_of_region_only_heads(runs):
    single, _, _ = runs
    losses = train_losses(single.parent / "refexp")
    assert sorted(losses) == [1, 2] and all(math.isfinite(v) for v in losses.values())


def test_ddp_losses_equal_single_process(runs):
    single, ddp, proc = runs
    a, b = train_losses(single), train_losses(ddp)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert "(2 x 2 x 2)" in proc.stdout + proc.stderr  # 2 processes x 2 accumulation steps x 2 samples


def test_ddp_validation_and_evaluation_gather_the_whole_split(runs):
    single, ddp, _ = runs
    val_a = [r for r in read_jsonl(single / "metrics.jsonl") if r["split"] == "val"]
    val_b = [r for r in read_jsonl(ddp / "metrics.jsonl") if r["split"] == "val"]
    assert len(val_a) == len(val_b) == 1
    assert val_b[0]["accuracy"] == pytest.approx(val_a[0]["accuracy"], abs=1e-9)
    ev_a = json.loads((single / "eval" / "metrics.json").read_text())["val"]
    ev_b = json.loads((ddp / "eval" / "metrics.json").read_text())["val"]
    assert ev_b == pytest.approx(ev_a, abs=1e-9)
    res_a = json.loads((single / "eval" / "vqa_results_val.json").read_text())
    res_b = json.loads((ddp / "eval" / "vqa_results_val.json").read_text())
    assert [r["question_id"] for r in res_b] == [r["question_id"] for r in res_a]  # every question, once


def test_only_rank0_writes(runs):
    _, ddp, _ = runs
    lines = read_jsonl(ddp / "metrics.jsonl")
    assert [r["step"] for r in lines if r["split"] == "train"] == [1, 2, 3]  # not once per rank
    assert len(read_jsonl(ddp / "results.jsonl")) == 2
    assert not list(ddp.glob(".tmp-*")) and not list(ddp.glob(".old-*"))


def test_ddp_ranks_draw_their_own_random_streams(runs):
    """Every rank seeded torch with the same seed, so dropout masks and Gumbel noise were copies of
    rank 0's. The RNG states each rank saved in its checkpoint must differ; rank 0's stream is the
    single process's."""
    from switchbert.train.checkpoint import load_trainer_state

    single, ddp, _ = runs
    rng = load_trainer_state(ddp / "last")["rng"]
    assert len(rng) == 2
    assert not torch.equal(rng[0]["torch"], rng[1]["torch"])
    assert rng[0]["numpy"][1].tolist() != rng[1]["numpy"][1].tolist()
    assert torch.equal(load_trainer_state(single / "last")["rng"][0]["torch"], rng[0]["torch"])


# -- the pretraining objective over the global batch ----------------------------------------------------------


def _pretrain_inputs():
    """A fixed model, heads and a 4-sample pretraining batch whose halves hold very different numbers of
    MLM targets, and whose second half has no MRC target at all."""
    from switchbert.heads import PretrainHeads
    from tests.helpers import batch_for, tiny_model

    model = tiny_model(torch.float64, seed=3, sab_modes=("J",), sib=None)  # no Gumbel noise, no dropout
    torch.manual_seed(4)
    heads = PretrainHeads(model.get_word_embeddings(), 32, 48, num_region_classes=5).double()
    batch = batch_for(model, batch_size=4, padded=False, num_text=6, num_regions=4, seed=5)
    g = torch.Generator().manual_seed(6)
    mlm = torch.full((4, 6), -100, dtype=torch.long)
    mlm[0, 1:5] = torch.randint(0, 100, (4,), generator=g)  # rank 0: 4 + 1 targets, rank 1: 1 target
    mlm[1, 2] = 7
    mlm[3, 1] = 9
    mrc_mask = torch.zeros(4, 4, dtype=torch.bool)
    mrc_mask[0, :3] = True
    mrc_mask[1, 1] = True
    mrc_probs = torch.softmax(torch.randn(4, 4, 5, generator=g, dtype=torch.float64), -1)
    itm = torch.tensor([1, 1, 1, 1])
    return model, heads, batch, mlm, mrc_mask, mrc_probs, itm


class _Objective(torch.nn.Module):
    """Model + pretraining heads -> ``PretrainLoss``: one module, so DDP sees every parameter."""

    def __init__(self, model, heads) -> None:
        super().__init__()
        self.model, self.heads = model, heads

    def forward(self, batch, mlm, mrc_mask, mrc_probs, itm, count_denominator=None):
        from switchbert.heads.losses import pretrain_loss

        logits = self.heads(self.model(batch), mlm_labels=mlm, mrc_target_mask=mrc_mask)
        return pretrain_loss(logits, itm_labels=itm, mrc_target_probs=mrc_probs, count_denominator=count_denominator)


def _ddp_pretrain_worker(rank: int, port: int, out_path: str) -> None:
    from functools import partial

    import torch.distributed as dist

    from switchbert.train.distributed import DistContext, all_reduce_mean, global_count_denominator

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ctx = DistContext(rank=rank, world_size=2)
        model, heads, batch, mlm, mrc_mask, mrc_probs, itm = _pretrain_inputs()
        objective = _Objective(model, heads)
        ddp = torch.nn.parallel.DistributedDataParallel(objective)
        half = torch.arange(2 * rank, 2 * rank + 2)
        results = {}
        for global_norm in (True, False):
            objective.zero_grad(set_to_none=True)
            reducer = partial(global_count_denominator, ctx=ctx) if global_norm else None
            loss = ddp(batch.select(half), mlm[half], mrc_mask[half], mrc_probs[half], itm[half], reducer)
            loss.total.backward()  # DDP averages the gradients over the two ranks
            parts = all_reduce_mean(torch.stack([loss.total, loss.mlm, loss.mrc, loss.itm]).detach(), ctx)
            grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
            results[global_norm] = {"parts": parts, "grads": grads}
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_pretrain(tmp_path_factory):
    """Rank 0's view of the all-reduced objective and gradients of 2 gloo processes (half the batch each),
    with (True) and without (False) the global token normalisation, and one process on the whole batch."""
    import torch.multiprocessing as mp

    path = tmp_path_factory.mktemp("ddp_pretrain") / "rank0.pt"
    mp.spawn(_ddp_pretrain_worker, args=(free_port(), str(path)), nprocs=2, join=True)
    results = torch.load(path, weights_only=True)
    objective = _Objective(*_pretrain_inputs()[:2])
    batch, mlm, mrc_mask, mrc_probs, itm = _pretrain_inputs()[2:]
    loss = objective(batch, mlm, mrc_mask, mrc_probs, itm)
    loss.total.backward()
    single = {"parts": torch.stack([loss.total, loss.mlm, loss.mrc, loss.itm]).detach(),
              "grads": {n: p.grad for n, p in objective.named_parameters() if p.grad is not None}}
    return results, single


def test_ddp_pretraining_objective_and_gradients_equal_one_process(ddp_pretrain):
    """MLM and MRC are means over the global batch's targets: 2-rank DDP equals one process on the full
    objective and on every gradient, to float64 noise."""
    results, single = ddp_pretrain
    torch.testing.assert_close(results[True]["parts"], single["parts"], rtol=1e-12, atol=1e-12)
    assert results[True]["grads"].keys() == single["grads"].keys()
    for name, g in single["grads"].items():
        torch.testing.assert_close(results[True]["grads"][name], g, rtol=1e-10, atol=1e-12, msg=name)


def test_per_process_token_means_would_differ_from_one_process(ddp_pretrain):
    """The failure the global normalisation removes, on the same inputs: per-process means halve MRC
    (rank 1 has no MRC target) and reweight MLM."""
    results, single = ddp_pretrain
    per_process = results[False]["parts"]
    assert float(per_process[2]) == pytest.approx(float(single["parts"][2]) / 2, rel=1e-9)  # MRC halves
    assert abs(per_process[1] - single["parts"][1]) > 1e-3  # MLM reweighted
