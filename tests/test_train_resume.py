"""``--resume`` continues exactly: on CPU a run interrupted and resumed logs the same losses, validation
results and final weights as an uninterrupted one. The model is Switch-BERT with dropout and Gumbel
noise on, so the RNG states and the position in the epoch must all be restored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train_support import make_synth, pretrain_accumulated, read_jsonl, train_losses

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def pretrain(synth: Path, out: Path, *extra: str) -> int:
    # The interrupted run stops mid-epoch; the resumed one crosses an epoch.
    return pretrain_accumulated(synth, out, *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    synth = make_synth(tmp_path_factory.mktemp("synth"))
    root = tmp_path_factory.mktemp("runs")
    assert pretrain(synth, root / "full") == 0
    assert pretrain(synth, root / "resumed", "train.stop_after=1") == 0
    interrupted = train_losses(root / "resumed")
    assert pretrain(synth, root / "resumed", "--resume") == 0
    return synth, root / "full", root / "resumed", interrupted


def test_interrupted_run_stopped_where_asked(runs):
    _, _, resumed, interrupted = runs
    assert sorted(interrupted) == [1]


def test_resumed_losses_equal_uninterrupted(runs):
    _, full, resumed, _ = runs
    a, b = train_losses(full), train_losses(resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == a[step], f"step {step}: resumed {b[step]} != uninterrupted {a[step]}"
    val_a = [r for r in read_jsonl(full / "metrics.jsonl") if r["split"] == "val"]
    val_b = [r for r in read_jsonl(resumed / "metrics.jsonl") if r["split"] == "val"]
    assert val_a == val_b and len(val_a) == 2


def test_resumed_weights_equal_uninterrupted(runs):
    _, full, resumed, _ = runs
    for name in ("model.safetensors", "heads.safetensors"):
        a, b = load_file(str(full / "last" / name)), load_file(str(resumed / "last" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    state = torch.load(resumed / "last" / "trainer_state.pt", weights_only=True)["state"]
    assert state["step"] == 4 and state["epoch"] == 2 and state["step_in_epoch"] == 0


def test_existing_run_needs_resume_flag(runs, capsys):
    synth, full, _, _ = runs
    assert pretrain(synth, full) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err


def test_resume_with_another_batch_size_is_refused(runs, tmp_path, capsys):
    synth, _, _, _ = runs
    out = tmp_path / "run"
    assert pretrain(synth, out, "train.stop_after=1") == 0
    assert pretrain(synth, out, "train.batch_size=4", "--resume") == 2
    assert "train.batch_size: 8 -> 4" in capsys.readouterr().err


def test_resume_without_checkpoint_is_refused(runs, tmp_path, capsys):
    synth, _, _, _ = runs
    assert pretrain(synth, tmp_path / "nothing", "--resume") == 2
    assert "no last/ checkpoint" in capsys.readouterr().err
