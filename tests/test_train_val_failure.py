"""A failure during an epoch's validation loses no training: ``last/`` holds the trained epoch before
validation begins, and ``--resume`` runs that validation (not the epoch again) and ends bit-identical to
an uninterrupted run: losses, validation records, history, best/ and last/ weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from switchbert.train.trainer import Trainer
from tests.test_train_support import make_synth, pretrain_accumulated, read_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


pretrain = pretrain_accumulated  # 2 steps per epoch, 2 epochs (as tests/test_train_resume.py)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    synth = make_synth(tmp_path_factory.mktemp("synth"))
    out = tmp_path_factory.mktemp("runs") / "full"
    assert pretrain(synth, out) == 0
    return synth, out


def state(run: Path) -> dict:
    return torch.load(run / "last" / "trainer_state.pt", weights_only=True)["state"]


@pytest.mark.parametrize("failing_call, error", [(1, RuntimeError), (2, KeyboardInterrupt)],
                         ids=["bad-record-after-epoch-1", "ctrl-c-in-the-final-validation"])
def test_validation_failure_keeps_the_epoch_and_resume_is_exact(full, tmp_path, monkeypatch, failing_call, error):
    synth, full_run = full
    out = tmp_path / "run"
    real, calls, steps = Trainer._validate, [], []

    def failing_validate(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == failing_call:
            raise error("validation record 3: no such image")  # a bad record, an evaluator bug, Ctrl-C
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_validate", failing_validate)
    if error is KeyboardInterrupt:
        with pytest.raises(KeyboardInterrupt):
            pretrain(synth, out)
    else:
        assert pretrain(synth, out) == 1
    # The trained epoch is in last/, waiting for its validation (epoch counters not yet advanced).
    s = state(out)
    assert (s["step"], s["epoch"], s["step_in_epoch"]) == (2 * failing_call, failing_call - 1, 2)
    assert len(s["history"]) == failing_call - 1

    monkeypatch.setattr(Trainer, "_validate", real)
    real_step = Trainer._train_step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_step", counting_step)
    assert pretrain(synth, out, "--resume") == 0
    assert len(steps) == 4 - 2 * failing_call  # epoch k is not trained again

    def records(run, split):  # all but the throughput, which is timing
        return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in read_jsonl(run / "metrics.jsonl")
                if r["split"] == split]

    assert records(out, "train") == records(full_run, "train")  # every step logged once, the same losses
    assert records(out, "val") == records(full_run, "val") and len(records(out, "val")) == 2
    assert state(out)["history"] == state(full_run)["history"]
    assert state(out)["best_value"] == state(full_run)["best_value"]
    for ckpt in ("last", "best"):
        for name in ("model.safetensors", "heads.safetensors"):
            a, b = load_file(str(full_run / ckpt / name)), load_file(str(out / ckpt / name))
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), (ckpt, name, k)
