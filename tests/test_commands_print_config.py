"""``--print-config`` prints the resolved config without running, and docs/training.md lists every key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from switchbert.cli import main
from switchbert.train.config import ExperimentConfig
from tests.test_train_support import synth_config

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def test_print_config_prints_the_resolved_config_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["finetune", synth_config("vqa"), f"output_dir={out}", "train.lr=5e-5", "--print-config"]) == 0
    text = capsys.readouterr().out
    config = yaml.safe_load(text)
    assert config["train"]["lr"] == 5e-5 and config["data"]["vqa_minival_size"] == 3000  # defaults filled in
    assert "recipe hash" in text and not out.exists()


def test_the_docs_list_every_config_key():
    doc = DOCS.read_text()
    block = doc[doc.index("## The experiment file"):doc.index("## What a run writes")]
    config = ExperimentConfig(task="vqa")
    missing = [f"{section}.{f.name}" for section in ("model", "data", "train", "eval")
               for f in dataclasses.fields(getattr(config, section)) if f"  {f.name}:" not in block]
    assert not missing, missing
