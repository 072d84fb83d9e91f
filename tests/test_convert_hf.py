"""HF transformers import: parity of encoder hidden states with VisualBertModel and LxmertModel.

Tiny random HF models (no network); every parameter, LayerNorms included, is randomised so that a
tensor in the wrong place shows. HF is fed our region sequence (IMG token first), see weights/hf.py.
"""

from __future__ import annotations

import argparse

import pytest
import torch

import switchbert
from switchbert.weights import load_hf
from switchbert.commands.import_checkpoint import register
from switchbert.layers.embeddings import add_img_token, region_token_mask
from switchbert.data.random_batch import random_batch

transformers = pytest.importorskip("transformers", reason="HF transformers is needed for parity tests")

TINY = dict(vocab_size=1200, hidden_size=32, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def randomise(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def save_hf(model, path):
    randomise(model)
    model.save_pretrained(str(path), safe_serialization=True)
    return model.eval()


def hf_inputs(batch, box_dim: int):
    feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    return dict(input_ids=batch.text_ids, attention_mask=batch.text_mask.long(),
                token_type_ids=torch.zeros_like(batch.text_ids)), feats, boxes[..., :box_dim], \
        region_token_mask(batch).long()


def test_visualbert_hidden_states_match_hf(tmp_path):
    cfg = transformers.VisualBertConfig(num_hidden_layers=2, visual_embedding_dim=24, **TINY)
    hf = save_hf(transformers.VisualBertModel(cfg), tmp_path)
    model, report = load_hf(tmp_path, switchbert.get_config("visualbert-base"))
    model.eval()
    assert report.unused == ["pooler.dense.bias", "pooler.dense.weight"]
    assert sorted(report.uninitialised) == sorted(f"{m}.{p}  (no source in this layout)"
                                                  for m in ("region_pooler.dense", "text_pooler.dense")
                                                  for p in ("bias", "weight"))
    assert model.config.num_layers == 2 and model.config.region_feat_dim == 24
    batch = random_batch(model.config, batch_size=3, num_text=9, num_regions=5)
    text, feats, _, vmask = hf_inputs(batch, 5)
    with torch.no_grad():
        ours = model(batch)
        ref = hf(**text, visual_embeds=feats, visual_attention_mask=vmask).last_hidden_state
    T = batch.text_ids.shape[1]
    err_t = (ours.text_hidden - ref[:, :T])[batch.text_mask].abs().max().item()
    err_r = (ours.region_hidden - ref[:, T:])[ours.region_mask].abs().max().item()
    print(f"parity max|diff| text {err_t:.2e} regions {err_r:.2e}")
    assert err_t < 1e-5 and err_r < 1e-5, (err_t, err_r)


@pytest.mark.parametrize("box_dim", [4, 5])
def test_lxmert_hidden_states_match_hf(tmp_path, box_dim):
    cfg = transformers.LxmertConfig(l_layers=2, r_layers=1, x_layers=2, visual_feat_dim=24, visual_pos_dim=box_dim,
                                    **TINY)
    hf = save_hf(transformers.LxmertModel(cfg), tmp_path)
    model, report = load_hf(tmp_path, switchbert.get_config("lxmert-base"))
    model.eval()
    c = model.config
    assert (c.text_layers, c.region_layers, c.cross_layers, c.region_box_dim) == (2, 1, 2, box_dim)
    assert report.unused == ["pooler.dense.bias", "pooler.dense.weight"]
    assert all("pooler" in k for k in report.uninitialised)
    assert any("visual_pos_dim" in n for n in report.notes)
    batch = random_batch(c, batch_size=3, num_text=9, num_regions=5)
    text, feats, boxes, vmask = hf_inputs(batch, box_dim)
    with torch.no_grad():
        ours = model(batch)
        ref = hf(**text, visual_feats=feats, visual_pos=boxes, visual_attention_mask=vmask)
    err_t = (ours.text_hidden - ref.language_output)[batch.text_mask].abs().max().item()
    err_r = (ours.region_hidden - ref.vision_output)[ours.region_mask].abs().max().item()
    print(f"parity max|diff| text {err_t:.2e} regions {err_r:.2e}")
    assert err_t < 1e-5 and err_r < 1e-5, (err_t, err_r)


def test_hf_import_checks_the_family_and_the_command_writes_a_directory(tmp_path, capsys):
    cfg = transformers.LxmertConfig(l_layers=1, r_layers=1, x_layers=1, visual_feat_dim=24, **TINY)
    save_hf(transformers.LxmertModel(cfg), tmp_path / "hf")
    with pytest.raises(ValueError, match="needs an LXMERT preset"):
        load_hf(tmp_path / "hf", switchbert.get_config("uniter-base"))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["import-checkpoint", str(tmp_path / "hf"), str(tmp_path / "ours"), "--from", "hf",
                              "--preset", "lxmert-base"])
    assert args.func(args) == 0
    assert "pooler.dense.weight" in capsys.readouterr().out
    loaded = switchbert.load_pretrained(tmp_path / "ours")
    assert loaded.config.region_box_dim == 4 and loaded.config.text_layers == 1
    # --strict passes: the only random parameters are the VOLTA poolers, which have no HF counterpart by
    # design, and the only unused keys HF's tanh pooler (before --strict meant for HF imports, this was 1).
    args.strict = True
    assert args.func(args) == 0
    line = capsys.readouterr().out.splitlines()[-2]
    assert "the VOLTA poolers (4 parameters) start random by design; fine-tuning trains them" in line
    assert "HF's tanh pooler (2 keys) unused by design" in line


def test_hf_lxmert_itm_convention_is_ours_but_its_head_is_not_imported(tmp_path):
    """HF LxmertForPreTraining: matched_label 1 = the sentence matches the image (our class 1); the
    head reads HF's tanh pooler, which we do not have, so cls.* stays unused and the report says why."""
    import inspect

    doc = inspect.getsource(transformers.LxmertForPreTraining.forward)
    assert "1 indicates that the sentence does match the image" in doc
    cfg = transformers.LxmertConfig(l_layers=1, r_layers=1, x_layers=1, visual_feat_dim=24, **TINY)
    save_hf(transformers.LxmertForPreTraining(cfg), tmp_path)
    _, report = load_hf(tmp_path, switchbert.get_config("lxmert-base"))
    assert "cls.seq_relationship.weight" in report.unused
    assert any("label 1 = matched, the same convention as ours" in n for n in report.notes)
