"""HF import errors are one line naming the file and what is wrong: a truncated weight file, a config.json
missing a field, a directory of another family than the preset."""

from __future__ import annotations

import json

import pytest

from switchbert.cli import main

transformers = pytest.importorskip("transformers", reason="HF transformers builds the tiny checkpoints")

TINY = dict(vocab_size=1200, hidden_size=32, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def visualbert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "visualbert"
    cfg = transformers.VisualBertConfig(num_hidden_layers=1, visual_embedding_dim=24, **TINY)
    transformers.VisualBertModel(cfg).save_pretrained(str(path), safe_serialization=True)
    return path


def _import(src, dst, preset, capsys):
    rc = main(["import-checkpoint", str(src), str(dst), "--from", "hf", "--preset", preset])
    err = capsys.readouterr().err.strip()
    return rc, err


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_a_truncated_weight_file_is_named(visualbert_dir, tmp_path, capsys):
    broken = _copy(visualbert_dir, tmp_path / "broken")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    rc, err = _import(broken, tmp_path / "out", "visualbert-base", capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(broken / "model.safetensors") in err and "unexpected error" not in err
    assert "truncated or corrupt" in err
    assert not (tmp_path / "out").exists()


def test_a_config_missing_a_field_names_the_file_and_the_field(visualbert_dir, tmp_path, capsys):
    broken = _copy(visualbert_dir, tmp_path / "broken")
    cfg = json.loads((broken / "config.json").read_text())
    del cfg["hidden_size"]
    (broken / "config.json").write_text(json.dumps(cfg))
    rc, err = _import(broken, tmp_path / "out", "visualbert-base", capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(broken / "config.json") in err and "'hidden_size'" in err and "missing" in err


def test_a_directory_of_another_family_is_named(visualbert_dir, tmp_path, capsys):
    rc, err = _import(visualbert_dir, tmp_path / "out", "lxmert-base", capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(visualbert_dir) in err and "visual_bert" in err and "lxmert-base" in err
