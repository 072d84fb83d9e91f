"""Model directories behave like HF's: eval mode on load, a class-level from_pretrained, a card."""

import json

import pytest
import torch

import switchbert
from switchbert.models import LxmertModel, SwitchBertModel, VLModel
from switchbert.models.directory import TrainingInfo

from tests.helpers import batch_for, tiny_model


def test_load_pretrained_returns_eval_mode_and_is_deterministic(tmp_path):
    model = tiny_model(torch.float32, seed=3)  # train mode: dropout and Gumbel noise
    model.save_pretrained(tmp_path / "m")
    loaded = switchbert.load_pretrained(tmp_path / "m")
    assert not loaded.training and not any(m.training for m in loaded.modules())
    batch = batch_for(loaded, torch.float32, seed=4)
    a, b = loaded(batch), loaded(batch)
    assert torch.equal(a.pooled, b.pooled)
    assert a.route_strings() == b.route_strings()


def test_from_pretrained_classmethod_checks_the_class(tmp_path):
    model = tiny_model(torch.float32, seed=5)
    model.save_pretrained(tmp_path / "m")
    loaded = SwitchBertModel.from_pretrained(tmp_path / "m", attention_impl="reference")
    assert isinstance(loaded, SwitchBertModel) and not loaded.training
    assert loaded.config.attention_impl == "reference"
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(ValueError, match="arch='switchbert'.*LxmertModel"):
        LxmertModel.from_pretrained(tmp_path / "m")
    with pytest.raises(TypeError, match="load_pretrained"):
        VLModel.from_pretrained(tmp_path / "m")


def test_config_json_names_model_type_and_architecture(tmp_path):
    switchbert.create_model("lxmert-tiny").save_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    assert raw["model_type"] == "switchbert"
    assert raw["architectures"] == ["LxmertModel"]
    assert raw["config"]["arch"] == "lxmert"


def test_model_card_says_what_is_known(tmp_path):
    model = tiny_model(torch.float32)
    model.save_pretrained(tmp_path / "a")
    card = (tmp_path / "a" / "README.md").read_text()
    assert f"{model.num_parameters():,}" in card and "not recorded" in card
    info = TrainingInfo(task="vqa", data="/data/vqa", steps=1200, epochs=2.0)
    model.save_pretrained(tmp_path / "b", training=info)
    card = (tmp_path / "b" / "README.md").read_text()
    assert "trained for: vqa" in card and "/data/vqa" in card and "1,200 optimizer steps (2 epochs)" in card
    assert "not recorded" not in card
