"""``import-checkpoint --from hf --strict``: passes when what stays random and what is unused have no
counterpart by design (VOLTA poolers, ITM head; HF's tanh pooler, ITM classifier, answer head, LXMERT's
attribute and feature decoders); refuses, writing nothing, when a weight that has a counterpart is
missing or a checkpoint weight that should map is left over."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from switchbert.cli import main

transformers = pytest.importorskip("transformers", reason="HF transformers builds the tiny checkpoints")

TINY = dict(vocab_size=120, hidden_size=16, num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)


def visualbert_dir(path, layers=2):
    cfg = transformers.VisualBertConfig(num_hidden_layers=layers, visual_embedding_dim=12, **TINY)
    transformers.VisualBertModel(cfg).save_pretrained(str(path), safe_serialization=True)
    return path


def import_hf(src, dst, preset="visualbert-base", *extra):
    return main(["import-checkpoint", str(src), str(dst), "--from", "hf", "--preset", preset, *extra])


def test_strict_passes_on_a_complete_lxmert_pretraining_dir(tmp_path, capsys):
    # LxmertForPreTraining has every kind of key unused by design: tanh pooler, ITM, answer head, attr/feat.
    cfg = transformers.LxmertConfig(l_layers=1, r_layers=1, x_layers=1, visual_feat_dim=12, num_qa_labels=5,
                                    num_object_labels=7, num_attr_labels=3, **TINY)
    transformers.LxmertForPreTraining(cfg).save_pretrained(str(tmp_path / "hf"), safe_serialization=True)
    assert import_hf(tmp_path / "hf", tmp_path / "ours", "lxmert-base", "--strict") == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("import-checkpoint: --strict")][0]
    assert line.endswith("the VOLTA poolers and the ITM head (6 parameters) start random by design; "
                         "fine-tuning trains them"), line
    for group in ("HF's tanh pooler", "HF's ITM classifier", "LXMERT's answer head", "LXMERT's attribute decoder",
                  "LXMERT's feature regression"):
        assert group in line
    assert (tmp_path / "ours" / "heads.safetensors").is_file()
    # --no-heads: the MLM and object heads are unused by request, still a pass.
    assert import_hf(tmp_path / "hf", tmp_path / "enc", "lxmert-base", "--strict", "--no-heads") == 0
    assert "the pretraining heads (--no-heads)" in capsys.readouterr().out


def test_strict_refuses_a_dir_missing_an_encoder_weight(tmp_path, capsys):
    hf = visualbert_dir(tmp_path / "hf")
    state = load_file(str(hf / "model.safetensors"))
    del state["encoder.layer.1.attention.self.query.weight"]
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    assert import_hf(hf, tmp_path / "ours", "visualbert-base", "--strict") == 1
    out = capsys.readouterr().out
    assert ("--strict: 1 parameters with an HF counterpart are missing from the checkpoint (layers.1.*); "
            f"nothing written to {tmp_path / 'ours'}") in out
    assert not (tmp_path / "ours").exists()
    assert import_hf(hf, tmp_path / "ours", "visualbert-base") == 0  # without --strict: written, reported


def test_strict_refuses_a_dir_with_more_layers_than_its_config(tmp_path, capsys):
    hf = visualbert_dir(tmp_path / "hf", layers=3)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2}))
    assert import_hf(hf, tmp_path / "ours", "visualbert-base", "--strict") == 1
    out = capsys.readouterr().out
    assert "16 checkpoint weights that should map were not used (encoder.layer.2.*; does config.json match" in out
    assert not (tmp_path / "ours").exists()
    # Without --strict the import goes ahead but says so on a line of its own.
    assert import_hf(hf, tmp_path / "ours", "visualbert-base") == 0
    assert ("note: 16 checkpoint weights that should map were not used (encoder.layer.2.*); --strict refuses"
            in capsys.readouterr().out)


def test_a_shape_mismatch_is_an_error_strict_or_not(tmp_path, capsys):
    hf = visualbert_dir(tmp_path / "hf")
    state = load_file(str(hf / "model.safetensors"))
    state["encoder.layer.0.output.dense.bias"] = torch.zeros(3)
    save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
    for extra in ((), ("--strict",)):
        assert import_hf(hf, tmp_path / "ours", "visualbert-base", *extra) == 2
        assert "encoder.layer.0.output.dense.bias has shape (3,)" in capsys.readouterr().err
        assert not (tmp_path / "ours").exists()
