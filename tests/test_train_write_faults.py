"""Faults while writing: a full disk during a checkpoint write, a read-only output directory, an unsafe
trainer state, a refused config, and Flickr30k lines that do not fit the format: one line each, naming
the file, and nothing left behind that looks like a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from switchbert.data.errors import DataError
from switchbert.data.retrieval import load_flickr_jsonl
from switchbert.train.checkpoint import STATE_NAME
from tests.test_train_support import QUIET, ckpt_step, make_synth, pretrain, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def stopped(synth, tmp_path):
    out = tmp_path / "run"
    assert pretrain(synth, out, "train.stop_after=1") == 0
    return out


def test_a_full_disk_during_a_checkpoint_write_names_the_file_and_keeps_last(synth, stopped):
    # ulimit -f stands in for a full disk: the resumed run's next checkpoint cannot be written.
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
            "from switchbert.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["pretrain", synth_config("pretrain"), f"data.root={synth}", f"output_dir={stopped}",
            "train.batch_size=8", "train.epochs=2", "train.log_every=1", *QUIET, "--resume"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    err = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert proc.returncode == 1, proc.stderr
    assert len(err) == 1 and "unexpected error" not in err[0] and "inline_container" not in err[0], proc.stderr
    assert str(stopped / "last") in err[0] and "model.safetensors" in err[0] and "intact" in err[0], err[0]
    assert ckpt_step(stopped) == 1  # last/ is the step-1 checkpoint, whole
    assert not list(stopped.glob(".tmp-*"))


def test_a_read_only_output_dir_names_the_directory(synth, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the first write into the directory fail as EACCES
        real = tempfile.mkdtemp

        def refuse(*a, dir=None, **k):
            if dir is not None and Path(dir) == out:
                raise PermissionError(13, "Permission denied", str(Path(dir) / ".tmp-last-x1y2"))
            return real(*a, dir=dir, **k)
        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    else:
        out.chmod(0o555)
    rc = pretrain(synth, out, "train.max_steps=1")
    out.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1, err
    assert f"{out}:" in err[0] and "not writable" in err[0] and ".tmp-" not in err[0], err[0]


def test_an_unsafe_trainer_state_is_refused_with_the_reason_not_torchs_advice(synth, stopped, capsys):
    state_file = stopped / "last" / STATE_NAME
    good = torch.load(state_file, weights_only=True)
    torch.save({**good, "optimizer": os.system}, state_file)  # a global the weights-only loader refuses
    capsys.readouterr()
    assert pretrain(synth, stopped, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(state_file) in err
    assert "Re-running" not in err and "weights_only" not in err, err
    assert "system" in err, err  # what was refused


@pytest.mark.parametrize("override", ["train.batch_size=64", "train.best_metric=nope"])
def test_a_refused_config_leaves_no_output_dir(synth, tmp_path, capsys, override):
    out = tmp_path / "refused"
    rc = pretrain(synth, out, override)
    assert rc == 2, capsys.readouterr().err
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def _flickr(tmp_path, lines):
    p = tmp_path / "test.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def test_a_flickr_line_with_another_number_of_captions_is_refused(tmp_path):
    five = ["a dog runs"] * 5
    p = _flickr(tmp_path, [{"id": "1", "sentences": five}, {"id": "2", "sentences": five[:4]}])
    with pytest.raises(DataError, match=r"test\.jsonl.*line 2 \(image 2\).*4 captions.*line 1 has 5"):
        load_flickr_jsonl(p)


def test_a_caption_that_is_not_a_string_is_reported_as_such(tmp_path):
    p = _flickr(tmp_path, [{"id": "1", "sentences": ["a dog", 3, "b", "c", "d"]}])
    with pytest.raises(DataError, match=r"line 1 \(image 1\) caption 1.*not a string \(int\)"):
        load_flickr_jsonl(p)
