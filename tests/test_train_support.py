"""Helpers shared by the training tests (no tests here): a tiny synthetic dataset and CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from switchbert.cli import main
from switchbert.data.synth import generate
from switchbert.train.checkpoint import STATE_NAME

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# The tiny presets read 64-d features; 32 classes is the fewest the synthetic detector supports.
SYNTH = dict(num_images=40, seed=0, feat_dim=64, num_classes=32, questions_per_image=3)

QUIET = ["train.progress=false", "train.tensorboard=false"]


def make_synth(directory: Path) -> Path:
    """40 images: 32 train, 4 val, 4 test (about 0.1 s)."""
    generate(directory, **SYNTH)
    return directory


def synth_config(task: str) -> str:
    return str(CONFIGS / "synth" / f"{task}.yaml")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def train_losses(run_dir: Path) -> dict[int, float]:
    """step -> logged training loss."""
    return {r["step"]: r["loss"] for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if r["split"] == "train"}


def pretrain(synth: Path, out: Path, *extra: str) -> int:
    # 32 training pairs, batch 8: 4 steps per epoch, 2 epochs = 8 steps. Options after the overrides.
    overrides = [e for e in extra if not e.startswith("--")]
    options = [e for e in extra if e.startswith("--")]
    return main(["pretrain", synth_config("pretrain"), f"data.root={synth}", f"output_dir={out}",
                 "train.batch_size=8", "train.epochs=2", "train.log_every=1", *QUIET, *overrides, *options])


def pretrain_accumulated(synth: Path, out: Path, *extra: str) -> int:
    # Half of the 32 training pairs (data.fraction), batch 8 in 2 accumulated micro-batches: 2 steps per
    # epoch, 2 epochs = 4 steps. Options (--resume) go after the overrides.
    return main(["pretrain", synth_config("pretrain"), f"data.root={synth}", f"output_dir={out}",
                 "data.fraction=0.5", "train.batch_size=8", "train.grad_accum=2", "train.epochs=2",
                 "train.log_every=1", *QUIET, *extra])


def ckpt_step(out: Path) -> int:
    return torch.load(out / "last" / STATE_NAME, weights_only=True)["state"]["step"]


# Fixtures for the run tests (test_train_checkpoint, _metrics_log, _rundir, ...), which import them.
@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture
def stopped(synth, tmp_path) -> Path:
    """A run stopped after 1 step (last/ at step 1)."""
    out = tmp_path / "run"
    assert pretrain(synth, out, "train.stop_after=1") == 0
    return out
