"""The baselines and ablations: a sweep over every preset, then one check per architecture (docs/method.md §5)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import switchbert
from switchbert.analysis.params import count_preset
from switchbert.config import ModelConfig
from switchbert.models import LxmertModel, SwitchBertModel, ViLBertModel
from switchbert.data.random_batch import random_batch
from tests.helpers import NO_DROPOUT

# Every preset keeps its architecture (depth, modes, SIB, top-K, embedding) at tiny width, so the
# sweep covers the base presets too and stays fast.
TINY_WIDTH = dict(hidden_size=32, num_heads=4, intermediate_size=64, pooler_size=24, region_feat_dim=40,
                  max_position=64, vocab_size=1200, vlbert_coord_dim=4)


def tiny_config(preset: str) -> ModelConfig:
    c = switchbert.get_config(preset)
    if c.hidden_size == 32:
        return c.replace(vocab_size=1200)
    return c.replace(**TINY_WIDTH)


def build(preset: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    from switchbert.models import build_model

    torch.manual_seed(seed)
    return build_model(tiny_config(preset).replace(**overrides)).to(dtype)


def batch_of(model, dtype: torch.dtype = torch.float32, **kwargs):
    b = random_batch(model.config, batch_size=kwargs.pop("batch_size", 3), num_text=kwargs.pop("num_text", 7),
                     num_regions=kwargs.pop("num_regions", 4), **kwargs)
    b.region_feats, b.region_boxes = b.region_feats.to(dtype), b.region_boxes.to(dtype)
    return b


# ---- the sweep ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(switchbert.PRESETS))
def test_every_preset_shapes_gradients_and_round_trip(preset, tmp_path):
    model = build(preset, **NO_DROPOUT)
    c = model.config
    # Break VL-BERT's zero-gain LayerNorms (and any other zero start) so connectivity shows in the gradient.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    batch = batch_of(model)
    out = model(batch)
    B, T, R = 3, 7, 5
    assert out.text_hidden.shape == (B, T, c.hidden_size)
    assert out.region_hidden.shape == (B, R, c.region_hidden_size_)
    assert out.pooled.shape == out.pooled_text.shape == out.pooled_region.shape == (B, c.pooler_size)
    assert out.region_mask.shape == (B, R) and bool(out.region_mask[:, 0].all()), "IMG token is first and real"
    switching = c.arch == "switchbert" and (len(c.sab_modes) > 1 or c.sib is not None)
    assert len(out.routes) == (c.num_layers if switching else 0)
    for t in (out.text_hidden, out.region_hidden, out.pooled):
        assert torch.isfinite(t).all()

    loss = out.text_hidden[out.text_mask].pow(2).mean() + out.region_hidden[out.region_mask].pow(2).mean()
    loss = loss + out.pooled.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0]
    assert not missing and not zero, f"no gradient: {missing}, zero gradient: {zero}"

    model.eval()
    with torch.no_grad():
        ref = model(batch)
    model.save_pretrained(tmp_path / preset)
    loaded = switchbert.load_pretrained(tmp_path / preset).eval()
    assert loaded.config == c
    with torch.no_grad():
        again = loaded(batch)
    torch.testing.assert_close(again.text_hidden, ref.text_hidden, atol=0, rtol=0)
    torch.testing.assert_close(again.region_hidden, ref.region_hidden, atol=0, rtol=0)


def test_sample_without_image_stays_finite_in_every_baseline():
    for preset in ("uniter-tiny", "visualbert-tiny", "vlbert-tiny", "lxmert-tiny", "vilbert-tiny"):
        model = build(preset, **NO_DROPOUT).eval()
        batch = batch_of(model)
        batch.image_mask = torch.tensor([True, False, True])
        out = model(batch)
        assert not bool(out.region_mask[1].any())
        assert torch.isfinite(out.text_hidden).all() and torch.isfinite(out.pooled).all()


# ---- presets as data ---------------------------------------------------------------------------------


def test_baseline_presets_have_the_controlled_architectures():
    g = switchbert.get_config
    for name, emb in (("uniter-base", "uniter"), ("visualbert-base", "visualbert"), ("vlbert-base", "vlbert")):
        c = g(name)
        assert (c.arch, c.embedding, c.num_layers, c.sab_modes, c.sib) == ("switchbert", emb, 12, ("J",), None)
    lx = g("lxmert-base")
    assert (lx.arch, lx.embedding, lx.text_layers, lx.region_layers, lx.cross_layers) == ("lxmert", "lxmert", 9, 5, 5)
    vb = g("vilbert-base")
    assert (vb.arch, vb.embedding, vb.text_layers, vb.region_layers, vb.cross_layers) == ("vilbert", "vilbert", 6, 0, 6)
    for c in (lx, vb):
        assert (c.hidden_size, c.region_hidden_size_, c.num_heads, c.intermediate_size) == (768, 768, 12, 3072)


def test_ablation_presets_are_the_paper_variants():
    g = switchbert.get_config
    assert g("switchbert-base-sab-only").sib is None and len(g("switchbert-base-sab-only").sab_modes) == 4
    assert g("switchbert-base-sib-only").sab_modes == ("J",) and g("switchbert-base-sib-only").sib == "out_mid_in"
    assert g("switchbert-base-neither").sab_modes == ("J",) and g("switchbert-base-neither").sib is None
    # Table 4 with SS kept (docs/method.md §3.1): {SC, CS}, {J}, {SC, CS, J}; each name says the modes it holds.
    assert g("switchbert-base-modes-ss-sc-cs").sab_modes == ("SS", "SC", "CS")
    assert g("switchbert-base-modes-ss-j").sab_modes == ("SS", "J")
    assert [g(f"switchbert-base-top{k}").top_k for k in (2, 1)] == [2, 1]
    for name, config in switchbert.PRESETS.items():  # "-modes-X-Y" holds exactly modes X, Y
        if "-modes-" in name:
            assert config().sab_modes == tuple(name.split("-modes-")[1].upper().split("-")), name


def test_retired_preset_names_give_an_error_naming_the_replacement():
    from switchbert.presets import RETIRED_PRESETS

    g = switchbert.get_config
    for old, new in (("switchbert-base-modes-j", "switchbert-base-modes-ss-j"),
                     ("switchbert-base-modes-sc-cs", "switchbert-base-modes-ss-sc-cs"),
                     ("switchbert-base-modes-sc-cs-j", "use switchbert-base"),
                     ("switchbert-base-top4", "use switchbert-base")):
        assert old in RETIRED_PRESETS and old not in switchbert.PRESETS
        with pytest.raises(ValueError, match=f"{old}.*retired.*{new}"):
            g(old)
    # No ablation preset holds the default model under another name.
    full = json.dumps(g("switchbert-base").replace(name="x").to_dict())
    for name, make in switchbert.PRESETS.items():
        if name.startswith("switchbert-base-"):
            assert json.dumps(make().replace(name="x").to_dict()) != full, f"{name} equals switchbert-base"
    for name in ("switchbert-base-6l", "switchbert-base-sab-only-6l", "uniter-base-6l"):
        assert g(name).num_layers == 6
    # The same ablations are reachable as overrides.
    assert g("switchbert-base", sab_modes=("J",), sib=None).replace(name="x") == g("uniter-base").replace(name="x")


def test_parameter_counts_match_the_paper_within_2_percent():
    for preset in ("uniter-base", "visualbert-base", "vlbert-base", "lxmert-base", "vilbert-base", "switchbert-base"):
        n = count_preset(preset)
        assert n.paper is not None and abs(n.diff_percent) < 2.0, (preset, n)
        assert n.with_heads > n.encoder


@pytest.mark.parametrize("field, value, pattern", [
    ("region_box_dim", 3, "region_box_dim"),
    ("cross_layers", 2, "cross_layers"),
    ("region_hidden_size", 64, "region_hidden_size"),
])
def test_config_rejects_misplaced_baseline_fields(field, value, pattern):
    with pytest.raises(ValueError, match=pattern):
        switchbert.get_config("uniter-tiny", **{field: value})


def test_dual_stream_config_errors_name_the_field():
    with pytest.raises(ValueError, match="cross_layers"):
        switchbert.get_config("lxmert-tiny", cross_layers=0)
    with pytest.raises(ValueError, match="region_hidden_size"):
        switchbert.get_config("lxmert-tiny", region_hidden_size=64, region_num_heads=4)
    with pytest.raises(ValueError, match="bert_layers"):
        switchbert.get_config("vilbert-tiny", bert_layers=5)
    with pytest.raises(ValueError, match="sab_modes"):
        switchbert.get_config("vilbert-tiny", sab_modes=("SS", "J"))
    # ViLBERT's region stream may be wider than the text stream (the original used 1024).
    model = build("vilbert-tiny", region_hidden_size=48, region_num_heads=4, region_intermediate_size=96)
    out = model(batch_of(model))
    assert out.region_hidden.shape[-1] == 48 and out.text_hidden.shape[-1] == 32


# ---- per-architecture checks, against naive float64 implementations ---------------------------------


def naive_attention(block, x: torch.Tensor, ctx: torch.Tensor, ctx_valid: torch.Tensor) -> torch.Tensor:
    """LN(x + O(softmax(QK^T/sqrt(hd)) V)) written out per sample, from ``block``'s weights."""
    H = block.num_heads
    outs = []
    for b in range(x.shape[0]):
        q = F.linear(x[b], block.query.weight, block.query.bias)
        k = F.linear(ctx[b], block.key.weight, block.key.bias)
        v = F.linear(ctx[b], block.value.weight, block.value.bias)
        L, D = q.shape
        q, k, v = (t.view(-1, H, D // H).transpose(0, 1) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(D // H)
        s = s.masked_fill(~ctx_valid[b][None, None], float("-inf"))
        a = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(L, D)
        outs.append(F.layer_norm(x[b] + F.linear(a, block.output.weight, block.output.bias), (D,),
                                 block.norm.weight, block.norm.bias, block.norm.eps))
    return torch.stack(outs)


def naive_ffn(block, x: torch.Tensor) -> torch.Tensor:
    h = F.linear(F.gelu(F.linear(x, block.up.weight, block.up.bias)), block.down.weight, block.down.bias)
    return F.layer_norm(x + h, (x.shape[-1],), block.norm.weight, block.norm.bias, block.norm.eps)


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def stream_inputs(T=5, R=4, D=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    text, region = torch.randn(3, T, D, generator=g, dtype=torch.float64), torch.randn(3, R, D, generator=g,
                                                                                        dtype=torch.float64)
    t_valid = torch.ones(3, T, dtype=torch.bool)
    t_valid[1, 3:] = False
    r_valid = torch.ones(3, R, dtype=torch.bool)
    r_valid[2, 1:] = False
    return text, region, t_valid, r_valid


def test_lxmert_cross_layer_uses_one_cross_attention_in_both_directions():
    model = build("lxmert-tiny", dtype=torch.float64, **NO_DROPOUT).eval()
    randomise(model)
    layer = model.cross_layers[0]
    blocks = [n for n, m in layer.named_children() if "cross" in n]
    assert blocks == ["cross"], "one cross-attention module, used both ways"
    text, region, tv, rv = stream_inputs()
    t, r = layer(text, region, tv, rv)
    # Both directions with the SAME weights, each from the layer's inputs; then self-attention, FFN.
    t_ref = naive_attention(layer.cross, text, region, rv)
    r_ref = naive_attention(layer.cross, region, text, tv)
    t_ref = naive_ffn(layer.text_ffn, naive_attention(layer.text_attn, t_ref, t_ref, tv))
    r_ref = naive_ffn(layer.region_ffn, naive_attention(layer.region_attn, r_ref, r_ref, rv))
    torch.testing.assert_close(t, t_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(r, r_ref, atol=1e-10, rtol=0)


def test_vilbert_co_attention_has_separate_weights_per_direction():
    model = build("vilbert-tiny", dtype=torch.float64, **NO_DROPOUT).eval()
    randomise(model)
    block = model.cross_layers[0]
    ids = {id(p) for p in block.text_cross.parameters()} & {id(p) for p in block.region_cross.parameters()}
    assert not ids, "the two directions share no tensor"
    text, region, tv, rv = stream_inputs()
    t, r = block(text, region, tv, rv)
    t_ref = naive_ffn(block.text_cross_ffn, naive_attention(block.text_cross, text, region, rv))
    r_ref = naive_ffn(block.region_cross_ffn, naive_attention(block.region_cross, region, text, tv))
    t_ref = naive_ffn(block.text_ffn, naive_attention(block.text_attn, t_ref, t_ref, tv))
    r_ref = naive_ffn(block.region_ffn, naive_attention(block.region_attn, r_ref, r_ref, rv))
    torch.testing.assert_close(t, t_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(r, r_ref, atol=1e-10, rtol=0)
    # Changing the text->region weights leaves the region stream's co-attention output untouched.
    with torch.no_grad():
        block.text_cross.key.weight.add_(1.0)
    r_after = block.region_cross(region, text, tv)
    torch.testing.assert_close(r_after, naive_attention(block.region_cross, region, text, tv), atol=1e-10, rtol=0)
    assert not torch.allclose(block(text, region, tv, rv)[0], t)


@pytest.mark.parametrize("preset", ["lxmert-tiny", "vilbert-tiny"])
def test_dual_stream_model_is_its_layers_in_order(preset):
    model = build(preset, dtype=torch.float64, **NO_DROPOUT).eval()
    randomise(model)
    batch = batch_of(model, torch.float64)
    out = model(batch)
    text, region, region_mask = model.embeddings(batch)
    for layer in model.text_layers:
        text = naive_ffn(layer.ffn, naive_attention(layer.attn, text, text, batch.text_mask))
    for layer in model.region_layers:
        region = naive_ffn(layer.ffn, naive_attention(layer.attn, region, region, region_mask))
    for layer in model.cross_layers:
        text, region = layer(text, region, batch.text_mask, region_mask)
    torch.testing.assert_close(out.text_hidden, text, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.region_hidden, region, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.pooled, torch.relu(model.text_pooler.dense(text[:, 0]))
                               * torch.relu(model.region_pooler.dense(region[:, 0])), atol=1e-10, rtol=0)


def test_visualbert_ignores_boxes_and_uniter_does_not():
    for preset, ignores in (("visualbert-tiny", True), ("uniter-tiny", False), ("vlbert-tiny", False)):
        model = build(preset, **NO_DROPOUT).eval()
        randomise(model)
        batch = batch_of(model)
        a = model(batch).region_hidden
        batch.region_boxes = torch.rand_like(batch.region_boxes)
        b = model(batch).region_hidden
        assert torch.equal(a, b) == ignores, preset


def test_fixed_mode_switchbert_without_sab_and_sib_equals_uniter():
    sb = build("switchbert-tiny", dtype=torch.float64, sab_modes=("J",), sib=None, **NO_DROPOUT)
    un = build("uniter-tiny", dtype=torch.float64, **NO_DROPOUT)
    randomise(sb, seed=3)
    un.load_state_dict(sb.state_dict(), strict=True)  # the same parameters, name for name
    batch = batch_of(sb, torch.float64)
    for train in (False, True):
        sb.train(train), un.train(train)
        a, b = sb(batch), un(batch)
        torch.testing.assert_close(a.text_hidden, b.text_hidden, atol=0, rtol=0)
        assert a.routes == () and b.routes == ()
    # And both are a plain single-stream BERT: one joint attention over [text; regions] per layer.
    un.eval()
    out = un(batch)
    text, region, region_mask = un.embeddings(batch)
    h, valid = torch.cat([text, region], 1), torch.cat([batch.text_mask, region_mask], 1)
    for layer in un.layers:
        a = layer.attention
        blk = type("Blk", (), dict(query=a.query, key=a.key, value=a.value, output=a.output, norm=layer.attention_norm,
                                   num_heads=a.num_heads))
        ffn = type("Ffn", (), dict(up=layer.ffn.up, down=layer.ffn.down, norm=layer.ffn_norm))
        h = naive_ffn(ffn, naive_attention(blk, h, h, valid))
    T = text.shape[1]
    torch.testing.assert_close(out.text_hidden[batch.text_mask], h[:, :T][batch.text_mask], atol=1e-10, rtol=0)


def test_vlbert_embedding_places_regions_after_the_text():
    model = build("vlbert-tiny", dtype=torch.float64, **NO_DROPOUT).eval()
    randomise(model)
    e = model.embeddings
    batch = batch_of(model, torch.float64)
    _, region, _ = e(batch)
    # Recompute region 1 of sample 0 by hand: position = #real text tokens, type = the object vector.
    from switchbert.layers.embeddings import add_img_token
    from switchbert.layers.embeddings.baselines import box_sinusoid

    feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    f = feats[0, 1]
    f = e.mask_feature if bool((f == 0).all()) else f
    geo = box_sinusoid(boxes[:1, 1:2], e.coord_dim)[0, 0]
    v = torch.relu(e.feat_proj(torch.cat([geo, f])))
    pos = int(batch.text_mask[0].sum())
    x = (e.object_norm(v) + e.object_embedding + e.text.position_embeddings.weight[pos] + e.type_embedding)
    torch.testing.assert_close(region[0, 1], e.text.norm(x), atol=1e-10, rtol=0)
    assert box_sinusoid(boxes, 4).shape == (*boxes.shape[:2], 32)


def test_vlbert_visual_gains_start_at_the_configured_value():
    # VL-BERT's and VOLTA's zero gains (every VL-BERT preset but the tiny one, trained from random weights):
    # no token carries the image's features or boxes at init.
    for preset in ("vlbert-base", "vlbert-small", "vlbert-mini"):
        c = switchbert.get_config(preset)
        assert c.vlbert_object_gain_init == 0 and c.vlbert_text_gain_init == 0
    c = switchbert.get_config("vlbert-tiny")
    assert c.vlbert_object_gain_init == 1 and c.vlbert_text_gain_init == 0
    model = build("vlbert-tiny", vlbert_object_gain_init=0.0, **NO_DROPOUT).eval()
    e = model.embeddings
    assert e.object_norm.weight.abs().max() == 0 and e.text_visual_norm.weight.abs().max() == 0
    batch = batch_of(model)
    other = batch_of(model)  # the same text and region counts, other features and boxes
    other.region_feats = torch.rand_like(batch.region_feats) + 0.1
    other.region_boxes = batch.region_boxes * 0.5
    with torch.no_grad():
        (text_a, region_a, _), (text_b, region_b, _) = e(batch), e(other)
    torch.testing.assert_close(region_a, region_b, atol=0, rtol=0)
    torch.testing.assert_close(text_a, text_b, atol=0, rtol=0)
    # vlbert_object_gain_init=1 (vlbert-tiny's): the region tokens carry the image from step 0; the text
    # tokens still do not (a unit text gain would swamp every word with the image).
    model = build("vlbert-tiny", **NO_DROPOUT).eval()
    e = model.embeddings
    assert torch.equal(e.object_norm.weight, torch.ones(32)) and e.text_visual_norm.weight.abs().max() == 0
    with torch.no_grad():
        (text_a, region_a, _), (text_b, region_b, _) = e(batch), e(other)
    assert (region_a[:, 1:] - region_b[:, 1:]).abs().amax() > 0.1
    torch.testing.assert_close(text_a, text_b, atol=0, rtol=0)
    # A checkpoint keeps its trained gains whatever the config's initial value.
    loaded = build("vlbert-tiny", vlbert_object_gain_init=0.0, **NO_DROPOUT)
    loaded.load_state_dict(model.state_dict())
    assert torch.equal(loaded.embeddings.object_norm.weight, torch.ones(32))


@pytest.mark.parametrize("value", [float("nan"), "1", True])
def test_vlbert_gain_init_must_be_a_finite_number(value):
    with pytest.raises(ValueError, match="vlbert_object_gain_init"):
        switchbert.get_config("vlbert-tiny").replace(vlbert_object_gain_init=value)


# ---- BERT initialisation follows the controlled setting ---------------------------------------------


def tiny_bert_dir(tmp_path, layers: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(5)
    bert = transformers.BertModel(cfg)
    state = {k: v.contiguous() for k, v in bert.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    return tmp_path, state


def test_lxmert_takes_bert_layers_in_the_controlled_order(tmp_path):
    path, bert = tiny_bert_dir(tmp_path, 3)
    torch.manual_seed(0)
    model = switchbert.create_model("lxmert-tiny", bert_dir=str(path), vocab_size=1200)
    assert isinstance(model, LxmertModel)
    q = "attention.self.query.weight"
    assert torch.equal(model.text_layers[0].attn.query.weight, bert[f"encoder.layer.0.{q}"])
    assert torch.equal(model.text_layers[1].ffn.up.weight, bert["encoder.layer.1.intermediate.dense.weight"])
    assert torch.equal(model.cross_layers[0].text_attn.query.weight, bert[f"encoder.layer.2.{q}"])
    assert torch.equal(model.cross_layers[0].text_ffn.norm.weight, bert["encoder.layer.2.output.LayerNorm.weight"])
    # Random: the second cross layer's text sub-layers (slot 4 > 3 BERT layers), the cross-attention,
    # the whole region stream.
    for p in (model.cross_layers[1].text_attn.query.weight, model.cross_layers[0].cross.query.weight,
              model.region_layers[0].attn.query.weight):
        assert not any(torch.equal(p, v) for v in bert.values() if v.shape == p.shape)


def test_vilbert_text_layers_take_bert_and_the_vision_stream_starts_random(tmp_path):
    path, bert = tiny_bert_dir(tmp_path, 4)
    model = switchbert.create_model("vilbert-tiny", bert_dir=str(path), vocab_size=1200)
    assert isinstance(model, ViLBertModel)
    assert torch.equal(model.text_layers[1].attn.key.weight, bert["encoder.layer.1.attention.self.key.weight"])
    # Block j's self-attention and the FFN after it take BERT layer text_layers + j; the FFN after the
    # co-attention does not.
    assert torch.equal(model.cross_layers[1].text_attn.value.weight, bert["encoder.layer.3.attention.self.value.weight"])
    assert torch.equal(model.cross_layers[1].text_ffn.down.weight, bert["encoder.layer.3.output.dense.weight"])
    for p in (model.cross_layers[0].text_cross_ffn.up.weight, model.cross_layers[0].region_attn.query.weight,
              model.cross_layers[0].text_cross.query.weight):
        assert not any(torch.equal(p, v) for v in bert.values() if v.shape == p.shape)
    with pytest.raises(ValueError, match="needs 4 BERT layers"):
        tiny = tiny_bert_dir(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path, 2)[0]
        switchbert.create_model("vilbert-tiny", bert_dir=str(tiny), vocab_size=1200)


@pytest.mark.parametrize("preset", ["visualbert-tiny", "vlbert-tiny"])
def test_single_stream_baselines_take_every_bert_layer(tmp_path, preset):
    path, bert = tiny_bert_dir(tmp_path, 3)
    model = switchbert.create_model(preset, bert_dir=str(path), vocab_size=1200)
    assert isinstance(model, SwitchBertModel)
    assert torch.equal(model.layers[2].attention.output.weight, bert["encoder.layer.2.attention.output.dense.weight"])
    assert torch.equal(model.embeddings.text.word_embeddings.weight, bert["embeddings.word_embeddings.weight"])


def test_every_baseline_exists_at_every_size_with_switchberts_feature_size():
    from switchbert.presets import BASELINES, SIZES

    for size in SIZES:
        ours = switchbert.get_config(f"switchbert-{size}")
        for baseline in BASELINES:
            name = f"{baseline}-{size}"
            assert name in switchbert.PRESETS, name
            c = switchbert.get_config(name)
            assert c.name == name
            # Same inputs and width as Switch-BERT at that size: a comparison needs no overrides.
            assert c.region_feat_dim == ours.region_feat_dim, name
            assert c.hidden_size == ours.hidden_size and c.pooler_size == ours.pooler_size, name
            assert c.max_position == ours.max_position, name
            assert c.sab_modes == ("J",) and c.sib is None, name  # fixed architectures
