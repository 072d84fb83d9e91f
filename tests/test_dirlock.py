"""One writer per directory: the lock itself, the synthetic generator under it, and evaluation's merges."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from switchbert.dirlock import DirectoryLock, DirectoryLockedError


def _hold(path, name=".lock"):
    """Another process that holds ``path/name`` (as a running writer does) until killed."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path[:0] = " + repr(sys.path) + "\n"
        "from switchbert.dirlock import DirectoryLock\n"
        f"DirectoryLock({str(path)!r}, name={name!r}).acquire()\n"
        "print('locked', flush=True)\n"
        "import time; time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _stop(holder):
    holder.kill()
    holder.wait()


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_the_kernel_frees_a_dead_ones(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(DirectoryLockedError) as err:
            DirectoryLock(tmp_path, message="{directory} busy: {holder}").acquire()
        assert str(err.value).startswith(f"{tmp_path} busy: pid {holder.pid} on host {socket.gethostname()}")
    finally:
        _stop(holder)
    with DirectoryLock(tmp_path):  # kill -9 left the file, not the lock
        pass


def test_another_lock_name_is_another_lock_and_wait_blocks_until_release(tmp_path):
    holder = _hold(tmp_path, ".merge.lock")
    try:
        with DirectoryLock(tmp_path):  # the run lock is free while the merge lock is held
            pass
        got = threading.Event()

        def take():
            with DirectoryLock(tmp_path, name=".merge.lock", wait=True):
                got.set()

        t = threading.Thread(target=take)
        t.start()
        assert not got.wait(0.5)  # waiting, not refused
    finally:
        _stop(holder)
    t.join(10)
    assert got.is_set()


def test_synth_into_a_directory_being_written_is_refused_and_touches_nothing(tmp_path, capsys):
    from tests.test_data_cli import _main

    d = tmp_path / "syn"
    holder = _hold(d)
    try:
        assert _main(["synth", str(d), "--images", "10", "--feat-dim", "16", "--num-classes", "12"]) == 2
        err = capsys.readouterr().err
        assert f"synthetic data directory {d} is being written by another process (pid {holder.pid}" in err
        assert sorted(p.name for p in d.iterdir()) == [".lock"]
    finally:
        _stop(holder)
    assert _main(["synth", str(d), "--images", "10", "--feat-dim", "16", "--num-classes", "12"]) == 0


def test_an_interrupted_regeneration_leaves_no_manifest(tmp_path, monkeypatch):
    """The manifest is what says a directory is complete (the demo reuses a directory by it)."""
    from switchbert.data import synth

    d = tmp_path / "syn"
    synth.generate(d, num_images=10, feat_dim=16, num_classes=12)
    assert (d / "manifest.json").is_file()

    def broken(path, records, fmt="fast"):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "write_store", broken)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(d, num_images=10, seed=3, feat_dim=16, num_classes=12)
    assert not (d / "manifest.json").exists()
    with DirectoryLock(d):  # and the lock went with the interrupted writer
        pass


def test_evaluation_merges_wait_for_each_other(tmp_path):
    from switchbert.train.evaluate import MERGE_LOCK_NAME, save_results

    run = tmp_path / "run"
    record = {"model": "m", "task": "vqa", "metric": "accuracy_val", "seed": 0, "value": 1.0, "split": "val",
              "checkpoint": "c", "recipe": "r"}
    holder = _hold(run, MERGE_LOCK_NAME)
    t = threading.Thread(target=save_results, args=(run, run / "eval", {"val": {"accuracy": 1.0}}, "c", [record]))
    try:
        t.start()
        time.sleep(0.5)
        assert t.is_alive() and not (run / "eval" / "metrics.json").exists()
    finally:
        _stop(holder)
    t.join(10)
    assert json.loads((run / "eval" / "metrics.json").read_text())["val"] == {"accuracy": 1.0}
    assert [json.loads(x)["value"] for x in (run / "results.jsonl").read_text().splitlines()] == [1.0]
    assert os.path.exists(run / MERGE_LOCK_NAME)
