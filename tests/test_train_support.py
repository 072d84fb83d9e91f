"""Helpers shared by the training tests (no tests here): a tiny synthetic dataset and CLI runs."""

from __future__ import annotations

import json
from pathlib import Path

from switchbert.data.synth import generate

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
