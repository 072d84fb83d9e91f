"""Checkpoints and runs lose nothing and run nothing (issue 13), and the console says what happens
(issue 14): weights-only trainer state, recovery from a kill at every point of a checkpoint write,
leftover cleanup, metrics.jsonl on fresh start / resume, the run lock, the NaN guard on the gradient
norm and the weights, what --resume may change, SIGTERM, file modes, and the log lines."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import switchbert
from switchbert.cli import main
from switchbert.io import atomic_write_text
from switchbert.train.checkpoint import STATE_NAME, resolve_checkpoint, write_dir_atomically
from tests.test_train_support import QUIET, make_synth, read_jsonl, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def pretrain(synth: Path, out: Path, *extra: str) -> int:
    # 32 training pairs, batch 8: 4 steps per epoch, 2 epochs = 8 steps. Options after the overrides.
    overrides = [e for e in extra if not e.startswith("--")]
    options = [e for e in extra if e.startswith("--")]
    return main(["pretrain", synth_config("pretrain"), f"data.root={synth}", f"output_dir={out}",
                 "train.batch_size=8", "train.epochs=2", "train.log_every=1", *QUIET, *overrides, *options])


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def stopped(synth, tmp_path) -> Path:
    """A run stopped after 1 step (last/ at step 1)."""
    out = tmp_path / "run"
    assert pretrain(synth, out, "train.stop_after=1") == 0
    return out


def ckpt_step(out: Path) -> int:
    return torch.load(out / "last" / STATE_NAME, weights_only=True)["state"]["step"]


# ------------------------------------------------------------------ trainer state cannot run code
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this calls open(marker, "w"): code run by a load
        return (open, (str(self.marker), "w"))


def test_crafted_trainer_state_is_refused_without_running_code(synth, stopped, tmp_path, capsys):
    marker = tmp_path / "pwned"
    state_file = stopped / "last" / STATE_NAME
    good = torch.load(state_file, weights_only=True)  # what we save loads weights-only
    assert good["state"]["step"] == 1 and isinstance(good["rng"][0]["numpy"][1], torch.Tensor)
    torch.save({**good, "optimizer": _Payload(marker)}, state_file)
    capsys.readouterr()
    assert pretrain(synth, stopped, "--resume") == 2
    assert not marker.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(state_file) in err and "refused" in err
    assert "weights_only=False" not in err


# --------------------------------------------------------------- a kill at every point of a write
def _write_with_kill_at(target: Path, version: str, kill_at: int) -> bool:
    """In a forked child, writes ``version`` with ``write_dir_atomically`` and dies (os._exit, no
    cleanup, as kill -9) before file-system operation number ``kill_at``. True if it completed."""
    from switchbert.train import checkpoint as ck

    pid = os.fork()
    if pid == 0:  # child
        count = {"n": 0}

        def op(fn):
            def wrapped(*a, **k):
                if count["n"] == kill_at:
                    os._exit(9)
                count["n"] += 1
                return fn(*a, **k)
            return wrapped

        ck.os.replace = op(os.replace)
        ck.shutil.rmtree = op(ck.shutil.rmtree)
        ck._fsync_dir = op(ck._fsync_dir)
        write_file = op(lambda p, text: Path(p).write_text(text))

        def write(d: Path) -> None:
            write_file(d / "config.json", version)
            write_file(d / "model.safetensors", version)

        ck.write_dir_atomically(target, write)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("first_write", [True, False])
def test_recovery_from_a_kill_at_every_point_of_a_directory_write(tmp_path, first_write):
    from switchbert.train.checkpoint import recover_dir

    outcomes = set()
    for kill_at in range(20):
        parent = tmp_path / f"k{kill_at}"
        target = parent / "last"
        if not first_write:
            write_dir_atomically(target, lambda d: [(d / n).write_text("1") for n in ("config.json", "model.safetensors")])
        completed = _write_with_kill_at(target, "2", kill_at)
        leftovers = sorted(p.name for p in parent.iterdir() if p.name != "last")
        recover_dir(target)
        assert sorted(p.name for p in parent.iterdir()) == (["last"] if target.exists() else []), (kill_at, leftovers)
        if target.exists():
            contents = {(target / n).read_text() for n in ("config.json", "model.safetensors")}
            assert len(contents) == 1, kill_at  # never a mix of two writes
            outcomes.add((kill_at, contents.pop(), bool(leftovers)))
            assert resolve_checkpoint(parent) == target
        else:
            assert first_write, kill_at  # an existing checkpoint is never lost
            outcomes.add((kill_at, None, bool(leftovers)))
        if completed:
            assert (target / "config.json").read_text() == "2"
            break
    versions = [v for _, v, _ in sorted(outcomes)]
    # Old (or nothing) until the temporary copy is complete, the new one from then on.
    first_new = versions.index("2")
    assert all(v == ("2") for v in versions[first_new:])
    assert all(v == (None if first_write else "1") for v in versions[:first_new])
    assert completed and len(versions) >= 6  # every operation of the write was a kill point


def test_resume_after_a_kill_between_the_renames_and_leftovers_are_removed(synth, stopped, capsys):
    # The state the issue found: only .old-last (and the complete .tmp-last-*); plus an unfinished write.
    tmp = stopped / ".tmp-last-abc123"
    os.replace(stopped / "last", tmp)  # a complete temporary copy (it carries .complete)
    assert (tmp / ".complete").is_file()
    (stopped / ".tmp-last-dead").mkdir()
    (stopped / ".tmp-last-dead" / "model.safetensors").write_bytes(b"half")
    assert pretrain(synth, stopped, "--resume", "train.stop_after=1") == 0
    assert ckpt_step(stopped) == 2
    assert sorted(p.name for p in stopped.iterdir() if p.name.startswith((".tmp", ".old"))) == []
    # only .old-last (the temporary copy gone too): still found, and the run continues from it
    os.replace(stopped / "last", stopped / ".old-last")
    assert pretrain(synth, stopped, "--resume", "train.stop_after=1") == 0
    assert ckpt_step(stopped) == 3
    steps = [r["step"] for r in read_jsonl(stopped / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3]


# --------------------------------------------------------------------------------- metrics.jsonl
def test_fresh_start_after_a_kill_does_not_append_to_the_old_log(synth, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 1, "epoch": 0, "loss": 9.0}) + "\n")
    with caplog.at_level(logging.WARNING):
        assert pretrain(synth, out, "train.stop_after=2") == 0
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2]
    assert read_jsonl(out / "metrics.jsonl.1")[0]["loss"] == 9.0
    assert "renamed to metrics.jsonl.1" in caplog.text


def test_resume_drops_a_torn_last_line_and_names_the_file_for_a_bad_one(synth, stopped, caplog, capsys):
    with open(stopped / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 2, "ep')  # killed mid-write
    with caplog.at_level(logging.WARNING):
        assert pretrain(synth, stopped, "--resume", "train.stop_after=1") == 0
    assert "dropped a torn last line" in caplog.text
    steps = [r["step"] for r in read_jsonl(stopped / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2]
    lines = (stopped / "metrics.jsonl").read_text().splitlines()
    lines.insert(1, "{not json")
    (stopped / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert pretrain(synth, stopped, "--resume", "train.stop_after=1") == 2
    assert f"{stopped / 'metrics.jsonl'}:2: not a JSON record" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ run lock
def test_a_second_run_into_a_locked_directory_is_refused_naming_the_first(synth, tmp_path, capsys):
    import fcntl
    import socket

    out = tmp_path / "run"
    out.mkdir()
    # Another process holds the lock (as a running trainer does), with its pid and host in the file.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, socket, sys, time\n"
        f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'pid {os.getpid()} on host {socket.gethostname()}'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert pretrain(synth, out, "train.stop_after=1") == 2
        err = capsys.readouterr().err
        assert f"in use by another run (pid {holder.pid} on host {socket.gethostname()}" in err
        assert not (out / "last").exists() and not (out / "metrics.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert pretrain(synth, out, "train.stop_after=1") == 0  # the kernel dropped the dead holder's lock
    fd = os.open(out / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and the finished run released its own
    os.close(fd)


# -------------------------------------------------------------------------------- the NaN guard
class _InfGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite), inf gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_an_inf_gradient_without_clipping_never_reaches_a_checkpoint(synth, tmp_path, monkeypatch, capsys):
    from switchbert.train import tasks

    original = tasks.VQATask.step
    calls = {"n": 0}

    def poisoned(self, model, heads, batch, labels):
        out = original(self, model, heads, batch, labels)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = _InfGrad.apply(out.loss)
        return out

    monkeypatch.setattr(tasks.VQATask, "step", poisoned)
    out = tmp_path / "run"
    rc = main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
               "train.batch_size=8", "train.checkpoint_every=1", "train.clip=null", "train.log_every=50", *QUIET])
    assert rc == 2
    err = capsys.readouterr().err
    assert "gradient norm is" in err and "at optimizer step 3" in err
    assert f"last good checkpoint is {out / 'last'} (step 2)" in err
    assert ckpt_step(out) == 2
    for name in ("model.safetensors", "heads.safetensors"):
        assert all(torch.isfinite(v).all() for v in load_file(str(out / "last" / name)).values()), name


def test_nonfinite_weights_or_optimizer_state_are_named():
    from torch import nn

    from switchbert.train.trainer import nonfinite_tensors

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert nonfinite_tensors(model=model, optimizer=opt) == []
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    opt.state[model[0].weight]["exp_avg_sq"][0, 0] = float("inf")
    assert nonfinite_tensors(model=model, optimizer=opt) == ["model.1.bias", "optimizer.state[param 0].exp_avg_sq"]


# ------------------------------------------------------------------------- what resume may change
def test_resume_refuses_a_changed_recipe_and_applies_allowed_changes(synth, stopped, capsys):
    config_before = (stopped / "config.yaml").read_text()
    assert pretrain(synth, stopped, "--resume", "train.lr=0.5", "train.seed=3") == 2
    err = capsys.readouterr().err
    assert re.search(r"train\.lr: [0-9.e-]+ -> 0\.5", err) and "train.seed: 0 -> 3" in err
    assert (stopped / "config.yaml").read_text() == config_before  # not rewritten with the refused value
    # epochs and log cadence may change: 3 epochs = 12 steps, the schedules stretched to them
    assert pretrain(synth, stopped, "--resume", "train.epochs=3", "train.log_every=5") == 0
    state = torch.load(stopped / "last" / STATE_NAME, weights_only=True)
    assert state["state"]["step"] == 12 and state["state"]["total_steps"] == 12
    assert state["config"]["train"]["epochs"] == 3
    steps = [r["step"] for r in read_jsonl(stopped / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 5, 10]


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
    assert "step 1/400  epoch 0  loss " in text and " samples/s " in text and " left" in text
    assert "stopped by SIGTERM at step" in text
    logged = max(r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train")
    assert 3 <= ckpt_step(out) == logged  # at most the step in flight is redone
    assert "Traceback" not in text


# ----------------------------------------------------------------------------------- file modes
def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600


def test_checkpoint_and_config_files_follow_the_umask(synth, tmp_path):
    old = os.umask(0o022)
    try:
        assert pretrain(synth, tmp_path / "run", "train.stop_after=1") == 0
    finally:
        os.umask(old)
    files = [tmp_path / "run" / "config.yaml", *(tmp_path / "run" / "last").iterdir()]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o644" for f in files}


# ------------------------------------------------------------------------------------- console
def test_plan_names_the_max_steps_cap_and_the_cut_epoch(synth, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert pretrain(synth, tmp_path / "run", "train.max_steps=6") == 0
    assert ("4 steps/epoch x 2 epochs = 8 steps, capped at 6 by train.max_steps "
            "(epoch 2 stops after 2 of its 4 steps)") in caplog.text
    assert "epoch 2 cut short by train.max_steps=6: 2 of its 4 steps" in caplog.text


def test_log_lines_go_around_the_bar_on_a_terminal(synth, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    handler = logging.StreamHandler(sys.stderr)  # the console handler the CLI installs
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.INFO)
    try:
        assert pretrain(synth, tmp_path / "run", "train.max_steps=4", "train.progress=true") == 0
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert "it/s" in err or "step/s" in err or "s/step" in err  # the bar was drawn
    line = next(seg for seg in err.split("\n") if "epoch 1 (step 4)" in seg)
    assert line.split("\r")[-1].startswith("epoch 1 (step 4)")  # not appended to the bar's text
    assert not any(seg.startswith("step ") for seg in err.split("\n"))  # the bar replaces the lines


def test_tensorboard_asked_for_but_missing_is_a_warning(tmp_path, monkeypatch, caplog):
    from switchbert.train.metrics_log import MetricsLog

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING):
        MetricsLog(tmp_path, tensorboard=True).close()
    assert "tensorboard is not installed" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        MetricsLog(tmp_path, tensorboard=False).close()
    assert "tensorboard" not in caplog.text


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
