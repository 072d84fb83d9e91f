"""HF pretraining heads: the MLM head of VisualBERT and LXMERT and LXMERT's object head import exactly
(logits equal to HF's); VisualBERT's ITM label convention (0 = matched) is documented; --strict tells the
parameters with no HF counterpart by design from those missing from the checkpoint."""

from __future__ import annotations

import pytest
import torch

import switchbert
from switchbert.cli import main
from switchbert.layers.embeddings import add_img_token, region_token_mask
from switchbert.data.random_batch import random_batch
from switchbert.weights.hf import ITM_ROWS_SWAPPED, load_hf_with_heads

transformers = pytest.importorskip("transformers", reason="HF transformers builds the tiny checkpoints")

TINY = dict(vocab_size=1200, hidden_size=32, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _save(model, path):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    model.save_pretrained(str(path), safe_serialization=True)
    return model.eval()


def test_lxmert_mlm_and_object_heads_match_hf(tmp_path):
    cfg = transformers.LxmertConfig(l_layers=1, r_layers=1, x_layers=1, visual_feat_dim=24, visual_pos_dim=4,
                                    num_object_labels=7, **TINY)
    hf = _save(transformers.LxmertForPreTraining(cfg), tmp_path)
    model, heads, report = load_hf_with_heads(tmp_path, switchbert.get_config("lxmert-base"))
    model.eval(), heads.eval()
    assert not [k for k in report.uninitialised if k.startswith(("heads.mlm", "heads.mrc"))], report.uninitialised
    assert heads.mrc.num_classes == 7
    batch = random_batch(model.config, batch_size=2, num_text=7, num_regions=4)
    feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    with torch.no_grad():
        out = model(batch)
        ref = hf(input_ids=batch.text_ids, attention_mask=batch.text_mask.long(),
                 token_type_ids=torch.zeros_like(batch.text_ids), visual_feats=feats, visual_pos=boxes[..., :4],
                 visual_attention_mask=region_token_mask(batch).long())
        mlm = heads.mlm(out.text_hidden)
        obj = heads.mrc(out.region_hidden)
        ref_obj = hf.obj_predict_head(_vision(hf, batch, feats, boxes))["obj"]
    err_mlm = (mlm - ref.prediction_logits)[batch.text_mask].abs().max().item()
    err_obj = (obj - ref_obj)[out.region_mask].abs().max().item()
    assert err_mlm < 5e-5 and err_obj < 5e-5, (err_mlm, err_obj)


def _vision(hf, batch, feats, boxes):
    out = hf.lxmert(input_ids=batch.text_ids, attention_mask=batch.text_mask.long(),
                    token_type_ids=torch.zeros_like(batch.text_ids), visual_feats=feats, visual_pos=boxes[..., :4],
                    visual_attention_mask=region_token_mask(batch).long())
    return out.vision_output


def test_visualbert_mlm_head_matches_hf_and_its_itm_convention_is_noted(tmp_path, capsys):
    import inspect

    assert "0 indicates sequence B is a matching pair" in inspect.getsource(transformers.VisualBertForPreTraining.forward)
    assert ITM_ROWS_SWAPPED == {"visual_bert": True, "lxmert": False}
    cfg = transformers.VisualBertConfig(num_hidden_layers=1, visual_embedding_dim=24, **TINY)
    hf = _save(transformers.VisualBertForPreTraining(cfg), tmp_path / "hf")
    model, heads, report = load_hf_with_heads(tmp_path / "hf", switchbert.get_config("visualbert-base"))
    model.eval(), heads.eval()
    assert any("0 = matched" in n for n in report.notes)
    batch = random_batch(model.config, batch_size=2, num_text=7, num_regions=4)
    feats, _ = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    with torch.no_grad():
        mlm = heads.mlm(model(batch).text_hidden)
        ref = hf(input_ids=batch.text_ids, attention_mask=batch.text_mask.long(),
                 token_type_ids=torch.zeros_like(batch.text_ids), visual_embeds=feats,
                 visual_attention_mask=region_token_mask(batch).long()).prediction_logits
    T = batch.text_ids.shape[1]
    assert (mlm - ref[:, :T])[batch.text_mask].abs().max().item() < 5e-5
    # The command writes the heads; --strict passes and names what has no HF counterpart by design (it
    # failed here before --strict was made meaningful for HF imports: the poolers and ITM head can never load).
    assert main(["import-checkpoint", str(tmp_path / "hf"), str(tmp_path / "ours"), "--from", "hf",
                 "--preset", "visualbert-base"]) == 0
    assert (tmp_path / "ours" / "heads.safetensors").is_file()
    assert main(["import-checkpoint", str(tmp_path / "hf"), str(tmp_path / "o2"), "--from", "hf",
                 "--preset", "visualbert-base", "--strict"]) == 0
    out = capsys.readouterr().out
    assert ("the VOLTA poolers, the ITM head and the MRC head (the checkpoint has no object head) "
            in out and "start random by design; fine-tuning trains them" in out)
    assert (tmp_path / "o2" / "heads.safetensors").is_file()


@pytest.mark.parametrize("kind", ["visual_bert", "lxmert"])
def test_bert_pooler_imports_hf_itm_in_our_label_convention(tmp_path, capsys, kind):
    # With pooler="bert" our model pools as HF does, so HF's pooler and ITM classifier map; ITM logits equal
    # HF's with VisualBERT's rows swapped (HF VisualBERT: 0 = matched; ours and HF LXMERT: 1 = matched).
    if kind == "visual_bert":
        cfg = transformers.VisualBertConfig(num_hidden_layers=1, visual_embedding_dim=24, **TINY)
        hf, preset = _save(transformers.VisualBertForPreTraining(cfg), tmp_path / "hf"), "visualbert-base"
    else:
        cfg = transformers.LxmertConfig(l_layers=1, r_layers=1, x_layers=1, visual_feat_dim=24, visual_pos_dim=4,
                                        num_object_labels=7, **TINY)
        hf, preset = _save(transformers.LxmertForPreTraining(cfg), tmp_path / "hf"), "lxmert-base"
    base = switchbert.get_config(preset).replace(pooler="bert", pooler_size=768)
    model, heads, report = load_hf_with_heads(tmp_path / "hf", base)
    model.eval(), heads.eval()
    assert not [k for k in report.uninitialised if k.startswith(("text_pooler", "heads.itm"))], report.uninitialised
    assert not [k for k in report.unused if k.startswith(("pooler.", "cls.seq_relationship"))], report.unused
    batch = random_batch(model.config, batch_size=3, num_text=7, num_regions=4)
    feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    common = dict(input_ids=batch.text_ids, attention_mask=batch.text_mask.long(),
                  token_type_ids=torch.zeros_like(batch.text_ids))
    with torch.no_grad():
        ours = heads.itm(model(batch).pooled)
        if kind == "visual_bert":
            ref = hf(**common, visual_embeds=feats, visual_attention_mask=region_token_mask(batch).long())
            ref = ref.seq_relationship_logits[:, [1, 0]]  # HF class 0 = matched = our class 1
        else:
            ref = hf(**common, visual_feats=feats, visual_pos=boxes[..., :4],
                     visual_attention_mask=region_token_mask(batch).long()).cross_relationship_score
    assert (ours - ref).abs().max().item() < 5e-5
    # The command: --pooler bert, and --strict has nothing by design left but (VisualBERT) the MRC head.
    assert main(["import-checkpoint", str(tmp_path / "hf"), str(tmp_path / "ours"), "--from", "hf",
                 "--preset", preset, "--pooler", "bert", "--strict"]) == 0
    out = capsys.readouterr().out
    assert "VOLTA poolers" not in out.split("--strict passed")[1] and "ITM head" not in out.split("--strict passed")[1]
    assert switchbert.load_pretrained(tmp_path / "ours").config.pooler == "bert"
