"""SIGTERM: a checkpoint at the step boundary, alone and under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import switchbert
from tests.test_train_support import QUIET, ckpt_step, read_jsonl, synth_config
from tests.test_train_support import synth  # noqa: F401 (fixtures)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_writes_a_checkpoint_at_the_step_boundary_and_prints_lines_without_a_tty(synth, tmp_path):
    out = tmp_path / "run"
    code = ("import sys; from switchbert.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(Path(switchbert.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "pretrain", synth_config("pretrain"), f"data.root={synth}", f"output_dir={out}",
         "train.batch_size=8", "train.epochs=100", "train.log_every=1", "train.tensorboard=false"],
        stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines = []
    try:
        for line in proc.stderr:  # progress=true, but stderr is a pipe: plain lines, no bar
            lines.append(line)
            if line.startswith("step 3/400"):
                proc.send_signal(signal.SIGTERM)
                break
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    text = "".join(lines) + rest
    assert proc.returncode == 128 + signal.SIGTERM, text
    assert "\r" not in text and "\x1b" not in text
    assert "step 1/400  epoch 1  loss " in text and " samples/s " in text and " left" in text
    assert "stopped by SIGTERM at step" in text
    logged = max(r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train")
    assert 3 <= ckpt_step(out) == logged  # at most the step in flight is redone
    assert "Traceback" not in text


def test_sigterm_to_one_ddp_rank_stops_both_at_the_same_step(synth, tmp_path):
    """Under torchrun the ranks agree on log steps: rank 1 alone is signalled during step 2; both write
    (rank 0) and stop at step 2, the next log step, and return 143."""
    import textwrap

    from tests.test_train_ddp import free_port

    out = tmp_path / "ddp"
    argv = [synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.preset=uniter-tiny",
            "model.init_from=null", "train.batch_size=8", "train.max_steps=6", "train.log_every=2", *QUIET]
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from switchbert.train import tasks
        from switchbert.commands.train import finetune_main
        original, calls = tasks.VQATask.step, {{"n": 0}}
        def step(self, *args):
            calls["n"] += 1
            if calls["n"] == 2 and os.environ["RANK"] == "1":
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self, *args)
        tasks.VQATask.step = step
        rc = finetune_main({argv!r})
        assert rc == 128 + signal.SIGTERM, rc
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(switchbert.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ckpt_step(out) == 2
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"] == [1, 2]
