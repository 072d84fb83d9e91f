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

from switchbert.train.cli import evaluate_main, finetune_main
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
        from switchbert.train.cli import evaluate_main, finetune_main
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
