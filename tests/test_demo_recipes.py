"""The demo builds every stage from the packaged synthetic recipes plus overrides, and that changed
nothing: each stage config equals what the demo resolved before (its own copy of the recipes), and
the tiny demo's numbers are those it gave before.

Both fixtures were written once by the demo before the refactor (``commands/demo.py`` at c4059a0):
``demo_stage_configs.json`` holds ``from_dict(experiment(...)).to_dict()`` for every size, model and
stage (seed 3, no progress bars, paths DATA / OUT / PRETRAIN / BERT, without ``output_dir`` and
``name``); ``demo_tiny_numbers.json`` holds ``run_demo(out, "tiny", progress=False, jobs=1)``'s
``per_seed`` and ``vqa_by_type`` (one thread)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import yaml

from switchbert.demo import MODELS, SIZES, STAGES, Cell, run_cell, stage_config
from switchbert.demo import pipeline

FIXTURES = Path(__file__).parent / "fixtures"
# Config fields added after the fixture was written, with the default that keeps the old behaviour: a
# stage config must hold exactly this value, and is then compared without it.
ADDED_SINCE_THE_FIXTURE = {("train", "switch_lr_scale"): 1.0}


def _resolved(cell: Cell, stage: str, manifest: dict) -> dict:
    d = json.loads(json.dumps(stage_config(cell, stage, manifest).to_dict()))
    for key in ("output_dir", "name"):
        d.pop(key)
    return d


@pytest.mark.parametrize("size_name", sorted(SIZES))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_stage_configs_are_those_of_the_old_demo(size_name, model):
    before = json.loads((FIXTURES / "demo_stage_configs.json").read_text())
    size = SIZES[size_name]
    cell = Cell(model, MODELS[model], size, Path(before["data_dir"]), Path("OUT"), before["seed"],
                bert_dir=Path(before["bert_dir"]) if size.use_bert else None, progress=before["progress"])
    for stage in STAGES:
        got = _resolved(cell, stage, before["manifest"])
        if stage != "pretrain":
            assert got["model"]["init_from"] == str(Path("OUT") / "pretrain")
            got["model"]["init_from"] = before["init_from"]
        for (section, key), default in ADDED_SINCE_THE_FIXTURE.items():
            assert got[section].pop(key) == default, (size_name, model, stage, key)
        assert got == before["configs"][size_name][model][stage], (size_name, model, stage)


def test_a_recipe_edit_reaches_the_demo(tmp_path, monkeypatch):
    # one configuration system: what configs/synth says, the demo runs (unless the size overrides it)
    raw = yaml.safe_load(pipeline.recipe_path("synth/vqa").read_text())
    raw["train"]["warmup"] = 0.25
    raw["data"]["max_regions"] = 12
    edited = tmp_path / "vqa.yaml"
    edited.write_text(yaml.safe_dump(raw))
    real = pipeline.recipe_path
    monkeypatch.setattr(pipeline, "recipe_path", lambda name: edited if name == "synth/vqa" else real(name))
    cell = Cell("UNITER", MODELS["UNITER"], SIZES["tiny"], tmp_path / "data", tmp_path / "runs", seed=0)
    cfg = stage_config(cell, "vqa", {"features": "f.lmdb"})
    assert (cfg.train.warmup, cfg.data.max_regions) == (0.25, 12)
    assert cfg.train.lr == SIZES["tiny"].lr and cfg.data.features == "f.lmdb"  # the size's and the data's
    assert stage_config(cell, "refexp", {}).train.warmup == 0.1  # the other recipes untouched


def test_cell_overrides_apply_last_per_stage_or_everywhere(tmp_path):
    cell = Cell("Switch-BERT", {}, SIZES["default"], tmp_path / "data", tmp_path / "runs", seed=4,
                stage_overrides={"*": {"train.lr": 1e-3}, "retrieval": {"train.max_steps": 7, "train.lr": 2e-3}})
    vqa, retrieval = stage_config(cell, "vqa", {}), stage_config(cell, "retrieval", {})
    assert (vqa.train.lr, vqa.train.max_steps) == (1e-3, 300)
    assert (retrieval.train.lr, retrieval.train.max_steps) == (2e-3, 7)
    assert (vqa.train.seed, vqa.output_dir) == (4, str(tmp_path / "runs" / "vqa"))
    assert vqa.model.init_from == str(tmp_path / "runs" / "pretrain")


def test_resume_skips_the_stages_that_finished_with_the_same_config(tmp_path, monkeypatch):
    trained: list[str] = []

    class FakeTrainer:
        def __init__(self, config, resume=False, source=""):
            assert not resume
            self.config = config

        def fit(self):
            out = Path(self.config.output_dir)
            assert not (out / "last").exists(), "a stage must start afresh"
            (out / "last").mkdir(parents=True)
            trained.append(self.config.task)

    monkeypatch.setattr("switchbert.train.trainer.Trainer", FakeTrainer)
    monkeypatch.setattr("switchbert.train.evaluate.evaluate",
                        lambda config, progress=True: {"val": {"accuracy": float(config.train.max_steps or 0)}})
    cell = Cell("UNITER", MODELS["UNITER"], SIZES["tiny"], tmp_path / "data", tmp_path / "runs", seed=0)
    first = run_cell(cell, {})
    assert trained == list(STAGES) and first.metrics["vqa"] == {"val": {"accuracy": 4.0}}
    trained.clear()
    assert run_cell(cell, {}, resume=True).metrics == first.metrics and trained == []
    # a changed retrieval stage reruns, and so does every stage after it (it starts from its weights)
    changed = dataclasses.replace(cell, stage_overrides={"retrieval": {"train.max_steps": 2}})
    again = run_cell(changed, {}, resume=True)
    assert trained == ["retrieval", "refexp"] and again.metrics["retrieval"] == {"val": {"accuracy": 2.0}}
    # without resume a stage never reuses a run: the trainer refuses a directory that holds one
    (tmp_path / "runs" / "pretrain" / pipeline.STAGE_FILE).unlink()
    trained.clear()
    with pytest.raises(AssertionError, match="afresh"):
        run_cell(cell, {})


def test_tiny_demo_numbers_are_unchanged(tmp_path):
    """``run_demo(out, "tiny", progress=False, jobs=1)`` gives the numbers of the demo before it was built
    from the recipes (tests/fixtures/demo_tiny_numbers.json, one thread)."""
    from switchbert.demo import run_demo

    before = json.loads((FIXTURES / "demo_tiny_numbers.json").read_text())
    result = run_demo(tmp_path, "tiny", progress=False, jobs=1, echo=lambda line: None)

    def close(got, want, key=""):
        if isinstance(want, dict):
            assert set(got) == set(want), key
            for k in want:
                close(got[k], want[k], f"{key}/{k}")
        elif isinstance(want, list):
            assert len(got) == len(want), key
            for i, (g, w) in enumerate(zip(got, want)):
                close(g, w, f"{key}[{i}]")
        else:
            tol = 1e-4 if key.endswith("target_score") else 1e-6
            assert math.isclose(got, want, rel_tol=0, abs_tol=tol), (key, got, want)

    close(result.per_seed, before["per_seed"])
    close(result.vqa_by_type, before["vqa_by_type"])
