"""The run directory's guards: the run lock, and what --resume may change."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from switchbert.train.checkpoint import STATE_NAME
from tests.test_train_support import pretrain, read_jsonl
from tests.test_train_support import stopped, synth  # noqa: F401 (fixtures)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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
