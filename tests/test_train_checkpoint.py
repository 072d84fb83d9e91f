"""Checkpoints lose nothing and run nothing: a weights-only trainer state, recovery from a kill at
every point of a checkpoint write, leftover cleanup, and files that follow the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from switchbert.train.checkpoint import STATE_NAME, resolve_checkpoint, write_dir_atomically
from tests.test_train_support import ckpt_step, pretrain, read_jsonl
from tests.test_train_support import stopped, synth  # noqa: F401 (fixtures)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


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


def test_checkpoint_and_config_files_follow_the_umask(synth, tmp_path):
    old = os.umask(0o022)
    try:
        assert pretrain(synth, tmp_path / "run", "train.stop_after=1") == 0
    finally:
        os.umask(old)
    files = [tmp_path / "run" / "config.yaml", *(tmp_path / "run" / "last").iterdir()]
    assert {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {f.name: "0o644" for f in files}
