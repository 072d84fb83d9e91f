"""VOLTA import: state dicts built in VOLTA's layout from its sub-layer lists, every tensor a distinct
known value; after import every tensor must be where VOLTA's semantics put it.

The generator below follows VOLTA's ``BertGated*`` constructors (a sub-layer has text modules when it
is in a text list, ``v_`` modules when in a vision list, and shares them when listed as shared) and
the ``ctrl_*.json`` lists scaled to the tiny presets; the expectations pair our modules with VOLTA's
sub-layers by list order, independently of the importer's arithmetic.
"""

from __future__ import annotations

import argparse
import itertools

import pytest
import torch

import switchbert
from switchbert.weights import import_volta, load_volta
from switchbert.commands.import_checkpoint import register
from switchbert.heads.pretrain import PretrainHeads, pretrain_heads_for
from switchbert.layers.embeddings import add_img_token
from switchbert.layers.embeddings.baselines import box_sinusoid
from switchbert.data.random_batch import random_batch
from switchbert.train.checkpoint import load_heads

V, Dt, F_, P, FF = 1200, 32, 64, 48, 64  # vocab, hidden, feature, pooler, FFN of the tiny presets

# ctrl_*.json scaled down: single stream 3 layers; LXMERT 2 text + 1 region + 2 cross; ViLBERT 2 + 2.
SINGLE = dict(tt=[0, 2, 4], tv=[0, 2, 4], vt=[0, 2, 4], vv=[0, 2, 4], t_ff=[1, 3, 5], v_ff=[1, 3, 5],
              shared=list(range(6)))
LXMERT = dict(tt=[0, 2, 5, 8], tv=[4, 7], vt=[4, 7], vv=[0, 5, 8], t_ff=[1, 3, 6, 9], v_ff=[1, 6, 9], shared=[4, 7])
VILBERT = dict(tt=[0, 2, 6, 10], tv=[4, 8], vt=[4, 8], vv=[6, 10], t_ff=[1, 3, 5, 7, 9, 11], v_ff=[5, 7, 9, 11],
               shared=[])


class Values:
    """Distinct tensors: each one's entries are unique across the whole state dict."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self, *shape: int) -> torch.Tensor:
        n = int(torch.tensor(shape).prod())
        t = (torch.arange(n, dtype=torch.float32) + self.offset).reshape(shape) * 1e-4
        self.offset += n
        return t


def volta_encoder(lists: dict, val: Values) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}

    def lin(prefix, i, o):
        sd[prefix + ".weight"], sd[prefix + ".bias"] = val(o, i), val(o)

    def ln(prefix, d=Dt):
        sd[prefix + ".weight"], sd[prefix + ".bias"] = val(d), val(d)

    def alias(src, dst):
        for p in ("weight", "bias"):
            sd[f"{dst}.{p}"] = sd[f"{src}.{p}"]

    n_sub = 1 + max(itertools.chain(*[v for k, v in lists.items() if k != "shared"]))
    for k in range(n_sub):
        L = f"bert.encoder.layer.{k}."
        if k in lists["tt"] + lists["tv"] + lists["vt"] + lists["vv"]:
            text, vision = k in lists["tt"] + lists["tv"], k in lists["vv"] + lists["vt"]
            shared = text and vision and k in lists["shared"]
            for m in ("query", "key", "value"):
                if text:
                    lin(L + f"attention_self.{m}", Dt, Dt)
                if shared:
                    alias(L + f"attention_self.{m}", L + f"attention_self.v_{m}")
                elif vision:
                    lin(L + f"attention_self.v_{m}", Dt, Dt)
            if text:
                lin(L + "attention_output.dense", Dt, Dt), ln(L + "attention_output.LayerNorm")
            if shared:
                alias(L + "attention_output.dense", L + "attention_output.v_dense")
                alias(L + "attention_output.LayerNorm", L + "attention_output.v_LayerNorm")
            elif vision:
                lin(L + "attention_output.v_dense", Dt, Dt), ln(L + "attention_output.v_LayerNorm")
        else:
            text, vision = k in lists["t_ff"], k in lists["v_ff"]
            shared = text and vision and k in lists["shared"]
            if text:
                lin(L + "intermediate.dense", Dt, FF), lin(L + "output.dense", FF, Dt), ln(L + "output.LayerNorm")
            if shared:
                for a, b in (("intermediate.dense", "intermediate.v_dense"), ("output.dense", "output.v_dense"),
                             ("output.LayerNorm", "output.v_LayerNorm")):
                    alias(L + a, L + b)
            elif vision:
                lin(L + "intermediate.v_dense", Dt, FF), lin(L + "output.v_dense", FF, Dt)
                ln(L + "output.v_LayerNorm")
    return sd


def volta_state(kind: str) -> dict[str, torch.Tensor]:
    """A whole VOLTA BertForVLPreTraining state dict for one tiny baseline, plus a task classifier."""
    val = Values()
    lists = {"lxmert": LXMERT, "vilbert": VILBERT}.get(kind, SINGLE)
    E = "bert.embeddings."
    sd = {E + "word_embeddings.weight": val(V, Dt), E + "position_embeddings.weight": val(64, Dt),
          E + "token_type_embeddings.weight": val(3 if kind == "vlbert" else 2, Dt),
          E + "LayerNorm.weight": val(Dt), E + "LayerNorm.bias": val(Dt)}

    def lin(name, i, o):
        sd[name + ".weight"], sd[name + ".bias"] = val(o, i), val(o)

    def ln(name):
        sd[name + ".weight"], sd[name + ".bias"] = val(Dt), val(Dt)

    if kind == "uniter":
        lin(E + "image_embeddings", F_, Dt), lin(E + "image_location_embeddings", 5, Dt)
        ln(E + "image_layer_norm"), ln(E + "image_location_layer_norm"), ln(E + "v_LayerNorm")
        sd[E + "image_token_type_embeddings.weight"] = sd[E + "token_type_embeddings.weight"]
    elif kind == "visualbert":
        lin(E + "projection", F_, Dt)
        sd[E + "token_type_embeddings_visual.weight"] = val(2, Dt)
        sd[E + "position_embeddings_visual.weight"] = val(64, Dt)
    elif kind == "vlbert":
        lin(E + "obj_downsample.1", 8 * 8 + F_, Dt)
        sd[E + "object_linguistic_embeddings.weight"] = val(1, Dt)
        sd[E + "object_mask_visual_embedding.weight"] = val(1, F_)
        sd[E + "end_embedding.weight"] = val(1, Dt)
        ln(E + "visual_ln_text"), ln(E + "visual_ln_object")
    elif kind == "lxmert":
        lin("bert.v_embeddings.image_embeddings", F_, Dt), lin("bert.v_embeddings.image_location_embeddings", 5, Dt)
        ln("bert.v_embeddings.ImgLayerNorm"), ln("bert.v_embeddings.LocLayerNorm")
    else:
        lin("bert.v_embeddings.image_embeddings", F_, Dt), lin("bert.v_embeddings.image_location_embeddings", 5, Dt)
        ln("bert.v_embeddings.LayerNorm")
    sd.update(volta_encoder(lists, val))
    lin("bert.t_pooler.dense", Dt, P), lin("bert.v_pooler.dense", Dt, P)
    lin("cls.predictions.transform.dense", Dt, Dt), ln("cls.predictions.transform.LayerNorm")
    sd["cls.predictions.bias"] = val(V)
    sd["cls.predictions.decoder.weight"] = sd[E + "word_embeddings.weight"]  # tied
    lin("cls.bi_seq_relationship", P, 2)
    lin("cls.imagePredictions.transform.dense", Dt, Dt)
    if kind != "vlbert":  # ctrl_vl-bert_base.json: image_head_ln false, the region head has no LayerNorm
        ln("cls.imagePredictions.transform.LayerNorm")
    lin("cls.imagePredictions.decoder_dict.0", Dt, 1601)
    lin("clfs_dict.TASK1.logit_fc.0", P, 8)  # a fine-tuned checkpoint's task head: never ours
    return sd


def model_for(kind: str):
    torch.manual_seed(0)
    overrides = dict(vocab_size=V, vlbert_coord_dim=8) if kind == "vlbert" else dict(vocab_size=V)
    return switchbert.create_model(f"{kind}-tiny", **overrides)


def expected_pairs(kind: str, model) -> list[tuple[str, str]]:
    """(our module, VOLTA module) pairs, by the order of VOLTA's sub-layer lists."""
    L = "bert.encoder.layer."
    att_t = {"query": "attention_self.query", "key": "attention_self.key", "value": "attention_self.value",
             "output": "attention_output.dense", "norm": "attention_output.LayerNorm"}
    att_v = {k: v.replace("self.", "self.v_").replace("output.", "output.v_") for k, v in att_t.items()}
    ff_t = {"up": "intermediate.dense", "down": "output.dense", "norm": "output.LayerNorm"}
    ff_v = {"up": "intermediate.v_dense", "down": "output.v_dense", "norm": "output.v_LayerNorm"}
    pairs = []

    def add(ours, k, names):
        pairs.extend((f"{ours}.{a}", f"{L}{k}.{b}") for a, b in names.items())

    if kind in ("uniter", "visualbert", "vlbert"):
        sl = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
              "output": "attention.output", "norm": "attention_norm"}
        for i, k in enumerate(SINGLE["tt"]):
            pairs.extend((f"layers.{i}.{sl[a]}", f"{L}{k}.{att_t[a]}") for a in sl)
        for i, k in enumerate(SINGLE["t_ff"]):
            pairs.extend((f"layers.{i}.{b}", f"{L}{k}.{ff_t[a]}")
                         for a, b in (("up", "ffn.up"), ("down", "ffn.down"), ("norm", "ffn_norm")))
        return pairs
    c = model.config
    lists = LXMERT if kind == "lxmert" else VILBERT
    text_attn = [f"text_layers.{i}.attn" for i in range(c.text_layers)] + \
                [f"cross_layers.{j}.text_attn" for j in range(c.cross_layers)]
    region_attn = [f"region_layers.{i}.attn" for i in range(c.region_layers)] + \
                  [f"cross_layers.{j}.region_attn" for j in range(c.cross_layers)]
    for ours, k in zip(text_attn, lists["tt"], strict=True):
        add(ours, k, att_t)
    for ours, k in zip(region_attn, lists["vv"], strict=True):
        add(ours, k, att_v)
    if kind == "lxmert":
        text_ff = [f"text_layers.{i}.ffn" for i in range(c.text_layers)] + \
                  [f"cross_layers.{j}.text_ffn" for j in range(c.cross_layers)]
        region_ff = [f"region_layers.{i}.ffn" for i in range(c.region_layers)] + \
                    [f"cross_layers.{j}.region_ffn" for j in range(c.cross_layers)]
        for j, k in enumerate(lists["tv"]):
            add(f"cross_layers.{j}.cross", k, att_t)
    else:
        text_ff = [f"text_layers.{i}.ffn" for i in range(c.text_layers)] + [
            f"cross_layers.{j}.{n}" for j in range(c.cross_layers) for n in ("text_cross_ffn", "text_ffn")]
        region_ff = [f"cross_layers.{j}.{n}" for j in range(c.cross_layers) for n in ("region_cross_ffn", "region_ffn")]
        for j, k in enumerate(lists["tv"]):  # text queries, vision keys/values (VOLTA tv scores)
            add(f"cross_layers.{j}.text_cross", k, {**att_t, "key": "attention_self.v_key",
                                                   "value": "attention_self.v_value"})
            add(f"cross_layers.{j}.region_cross", k, {**att_v, "key": "attention_self.key",
                                                     "value": "attention_self.value"})
    for ours, k in zip(text_ff, lists["t_ff"], strict=True):
        add(ours, k, ff_t)
    for ours, k in zip(region_ff, lists["v_ff"], strict=True):
        add(ours, k, ff_v)
    return pairs


KINDS = ["uniter", "visualbert", "vlbert", "lxmert", "vilbert"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_volta_tensor_lands_where_it_belongs(kind):
    sd = volta_state(kind)
    model = model_for(kind)
    report = import_volta(model, sd)
    params = dict(model.named_parameters())
    assert report.uninitialised == [], report.summary()
    assert all(k.startswith(("cls.", "clfs_dict.")) for k in report.unused), report.summary()
    assert "clfs_dict.TASK1.logit_fc.0.weight" in report.unused
    for ours, theirs in expected_pairs(kind, model):
        for p in ("weight", "bias"):
            assert torch.equal(params[f"{ours}.{p}"], sd[f"{theirs}.{p}"]), f"{ours}.{p} != {theirs}.{p}"
    # Every parameter holds a VOLTA tensor (or one row of a VOLTA table), and no two hold the same one.
    sources = []
    for name, p in params.items():
        hits = [k for k, v in sd.items() if v.shape == p.shape and torch.equal(v, p)]
        hits += [f"{k}[{i}]" for k, v in sd.items() if v.dim() == 2 and v.shape[1:] == p.shape and v.shape[0] <= 3
                 for i in range(v.shape[0]) if torch.equal(v[i], p)]
        hits += [k for k, v in sd.items() if kind == "vlbert" and v.shape[0] == 3 and p.shape[0] == 2
                 and torch.equal(v[:2], p)]
        assert hits, f"{name} holds no VOLTA tensor"
        sources.append(min(hits))
    assert len(set(sources)) == len(sources), "two parameters took the same VOLTA tensor"
    E = "bert.embeddings."
    assert torch.equal(params["embeddings.text.word_embeddings.weight"], sd[E + "word_embeddings.weight"])
    assert torch.equal(params["text_pooler.dense.weight"], sd["bert.t_pooler.dense.weight"])
    assert torch.equal(params["region_pooler.dense.bias"], sd["bert.v_pooler.dense.bias"])


def test_embedding_variants_take_their_own_tensors():
    sd, m = volta_state("vlbert"), model_for("vlbert")
    import_volta(m, sd)
    E = "bert.embeddings."
    assert torch.equal(m.embeddings.text.token_type_embeddings.weight, sd[E + "token_type_embeddings.weight"][:2])
    assert torch.equal(m.embeddings.type_embedding, sd[E + "token_type_embeddings.weight"][2])
    assert torch.equal(m.embeddings.end_embedding, sd[E + "end_embedding.weight"][0])
    assert torch.equal(m.embeddings.mask_feature, sd[E + "object_mask_visual_embedding.weight"][0])
    assert torch.equal(m.embeddings.object_norm.weight, sd[E + "visual_ln_object.weight"])
    sd, m = volta_state("uniter"), model_for("uniter")
    report = import_volta(m, sd)
    assert torch.equal(m.embeddings.region.norm.bias, sd[E + "v_LayerNorm.bias"])
    assert any(a.startswith(E + "image_token_type_embeddings") for a in report.aliases)
    sd, m = volta_state("lxmert"), model_for("lxmert")
    import_volta(m, sd)
    assert torch.equal(m.embeddings.box_norm.weight, sd["bert.v_embeddings.LocLayerNorm.weight"])


def test_shared_v_aliases_are_deduplicated_and_must_agree():
    sd = volta_state("lxmert")
    report = import_volta(model_for("lxmert"), sd)
    # LXMERT's cross-attention (sub-layers 4 and 7) is stored twice; each alias consumed once.
    assert "bert.encoder.layer.4.attention_self.v_key.weight = bert.encoder.layer.4.attention_self.key.weight" \
        in report.aliases
    assert not any("v_" in k for k in report.unused)
    sd["bert.encoder.layer.7.attention_self.v_query.weight"] = sd["bert.encoder.layer.7.attention_self.v_query.weight"] + 1
    with pytest.raises(ValueError, match="layer.7.attention_self.v_query.weight should be the same tensor"):
        import_volta(model_for("lxmert"), sd)


def test_tied_decoder_and_heads():
    sd, model = volta_state("vilbert"), model_for("vilbert")
    heads = PretrainHeads(model.embeddings.text.word_embeddings, Dt, P)
    report = import_volta(model, sd, heads=heads)
    assert report.unused == ["clfs_dict.TASK1.logit_fc.0.bias", "clfs_dict.TASK1.logit_fc.0.weight"]
    assert "cls.predictions.decoder.weight = bert.embeddings.word_embeddings.weight" in report.aliases
    assert torch.equal(heads.mlm.bias, sd["cls.predictions.bias"])
    assert torch.equal(heads.mrc.decoder.weight, sd["cls.imagePredictions.decoder_dict.0.weight"])
    # VOLTA's ITM label 0 = matched, ours class 1 = matched: the rows are swapped.
    assert torch.equal(heads.itm.classifier.bias, sd["cls.bi_seq_relationship.bias"].flip(0))
    assert torch.equal(heads.itm.classifier.weight[1], sd["cls.bi_seq_relationship.weight"][0])
    assert heads.mlm.decoder_weight is model.embeddings.text.word_embeddings.weight
    sd["cls.predictions.decoder.weight"] = sd["cls.predictions.decoder.weight"] * 2  # an untied decoder
    with pytest.raises(ValueError, match="cls.predictions.decoder.weight should be the same tensor"):
        import_volta(model_for("vilbert"), sd)


def test_missing_keys_are_reported_and_shape_mismatches_name_the_key():
    sd = volta_state("uniter")
    del sd["bert.encoder.layer.3.intermediate.dense.weight"]
    report = import_volta(model_for("uniter"), sd)
    assert report.uninitialised == ["layers.1.ffn.up.weight  (expected bert.encoder.layer.3.intermediate.dense.weight)"]
    text = report.summary()
    assert "parameters NOT initialised (1)" in text and "unused checkpoint keys" in text
    sd = volta_state("uniter")
    sd["bert.v_pooler.dense.weight"] = torch.zeros(10, Dt)
    with pytest.raises(ValueError, match=r"bert.v_pooler.dense.weight has shape \(10, 32\)"):
        import_volta(model_for("uniter"), sd)


def test_import_checkpoint_command_writes_a_model_directory(tmp_path, capsys):
    sd = volta_state("lxmert")
    src = tmp_path / "pytorch_model_9.bin"
    torch.save({"module." + k: v for k, v in sd.items()}, src)  # DataParallel prefix, as VOLTA may save
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["import-checkpoint", str(src), str(tmp_path / "out"), "--from", "volta", "--preset", "lxmert-tiny",
                              "--strict"])
    # lxmert-tiny has the full vocabulary; the file has 1200 words: a clear shape error.
    with pytest.raises(ValueError, match="word_embeddings.weight has shape"):
        args.func(args)
    sd["bert.embeddings.word_embeddings.weight"] = torch.zeros(30522, Dt)
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
    sd["cls.predictions.bias"] = torch.zeros(30522)
    torch.save(sd, src)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "parameters NOT initialised (0): none" in out and "clfs_dict.TASK1.logit_fc.0.weight" in out
    loaded = switchbert.load_pretrained(tmp_path / "out")
    assert torch.equal(loaded.cross_layers[1].cross.value.bias, sd["bert.encoder.layer.7.attention_self.value.bias"])


# -- what VOLTA's code computes, established against VOLTA itself (e-bug/volta, BertForVLPreTraining) ------------


def test_itm_probability_means_matched_as_in_volta():
    """VOLTA: label 0 = the caption belongs to the image (1 only when it was replaced), so VOLTA's match
    probability is softmax(W p + b)[0]; ours is softmax(itm(p))[1] and must be the same number."""
    sd = volta_state("uniter")
    model, heads, report = load_volta(sd, switchbert.get_config("uniter-tiny").replace(vocab_size=V))
    pooled = torch.randn(3, P)
    W, b = sd["cls.bi_seq_relationship.weight"], sd["cls.bi_seq_relationship.bias"]
    volta_match = (pooled @ W.T + b).softmax(-1)[:, 0]
    ours_match = heads.itm(pooled).softmax(-1)[:, 1]
    torch.testing.assert_close(ours_match, volta_match, rtol=0, atol=1e-6)
    assert any("ITM" in n and "rows swapped" in n for n in report.notes)


def test_load_volta_builds_every_pretraining_head_and_nothing_is_left_over():
    for kind in KINDS:
        sd = volta_state(kind)
        model, heads, report = load_volta(sd, model_for(kind).config)
        assert report.uninitialised == [], (kind, report.summary())
        assert report.unused == ["clfs_dict.TASK1.logit_fc.0.bias", "clfs_dict.TASK1.logit_fc.0.weight"], kind
        assert heads.mrc.num_classes == 1601 and heads.mlm.decoder_weight is model.get_word_embeddings().weight
        assert torch.equal(heads.mrc.transform.dense.weight, sd["cls.imagePredictions.transform.dense.weight"])
        assert torch.equal(heads.mlm.transform.layer_norm.bias, sd["cls.predictions.transform.LayerNorm.bias"])
        # The heads fit what training and evaluation build for this model.
        assert heads.state_dict().keys() == pretrain_heads_for(model).state_dict().keys()
    _, heads, report = load_volta(volta_state("lxmert"), model_for("lxmert").config, with_heads=False)
    assert heads is None and "cls.bi_seq_relationship.weight" in report.unused
    finetuned = {k: v for k, v in volta_state("uniter").items() if not k.startswith("cls.")}
    _, heads, report = load_volta(finetuned, model_for("uniter").config)
    assert heads is None and report.uninitialised == [] and any("no pretraining heads" in n for n in report.notes)


def test_vlbert_region_head_follows_the_checkpoint_layer_norm():
    """ctrl_vl-bert_base.json has image_head_ln false: the MRC transform is dense -> GELU only."""
    assert switchbert.get_config("vlbert-base").mrc_head_norm is False  # native VL-BERT follows VOLTA too
    sd = volta_state("vlbert")
    model, heads, report = load_volta(sd, model_for("vlbert").config)
    assert model.config.mrc_head_norm is False and isinstance(heads.mrc.transform.layer_norm, torch.nn.Identity)
    assert not any("LayerNorm" in k for k in report.uninitialised + report.unused)
    h = torch.randn(2, 3, Dt)
    dense, dec = "cls.imagePredictions.transform.dense.", "cls.imagePredictions.decoder_dict.0."
    expected = torch.nn.functional.gelu(h @ sd[dense + "weight"].T + sd[dense + "bias"]) @ sd[dec + "weight"].T \
        + sd[dec + "bias"]
    torch.testing.assert_close(heads.mrc(h), expected, rtol=1e-5, atol=1e-5)
    # The other baselines keep the LayerNorm, loaded from the checkpoint.
    _, heads, _ = load_volta(volta_state("uniter"), model_for("uniter").config)
    assert isinstance(heads.mrc.transform.layer_norm, torch.nn.LayerNorm)
    # Heads with a LayerNorm the checkpoint lacks: reported, with what to do.
    model = switchbert.models.build_model(model_for("vlbert").config.replace(mrc_head_norm=True))
    report = import_volta(model, sd, heads=pretrain_heads_for(model))
    assert sorted(k.split()[0] for k in report.uninitialised) == ["heads.mrc.transform.layer_norm.bias",
                                                            "heads.mrc.transform.layer_norm.weight"]
    assert any("mrc_head_norm=False" in n for n in report.notes)


def _vlbert_text_embedding(model, batch, slot: int) -> torch.Tensor:
    """VL-BERT's text embedding written out: LN(word + position + type 0 + LN_txt(visual[slot])), where
    visual = ReLU(W [sinusoid(box); feature]) over the IMG-first region slots (zero feature -> mask feature)."""
    e = model.embeddings
    feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
    zero = (feats == 0).all(-1, keepdim=True)
    feats = torch.where(zero, e.mask_feature, feats)
    visual = torch.relu(e.feat_proj(torch.cat([box_sinusoid(boxes, e.coord_dim), feats], -1)))
    T = batch.text_ids.shape[1]
    t = e.text
    text = t.word_embeddings(batch.text_ids) + t.position_embeddings.weight[:T] + t.token_type_embeddings.weight[0]
    return t.norm(text + e.text_visual_norm(visual[:, slot:slot + 1] if slot == 0 else visual[:, slot:]))


def test_vlbert_text_tokens_take_the_last_slot_as_volta_does():
    sd = volta_state("vlbert")
    model, _, report = load_volta(sd, model_for("vlbert").config)
    assert model.config.vlbert_text_visual == "last"
    assert any("LAST region slot" in n and "batch mates" in n for n in report.notes)
    assert any("NOT reproduced" in n and "shortest text" in n for n in report.notes)
    model.eval()
    with torch.no_grad():
        torch.manual_seed(0)  # random visual weights, so that the slots' visual vectors differ visibly
        for p in (model.embeddings.text_visual_norm.weight, model.embeddings.feat_proj.weight):
            torch.nn.init.normal_(p)
        batch = random_batch(model.config, batch_size=3, num_text=6, num_regions=4, seed=3)
        text, _, _ = model.embeddings(batch)
        torch.testing.assert_close(text, _vlbert_text_embedding(model, batch, -1), rtol=1e-5, atol=1e-5)
        # Our own default, the IMG token, is a different vector.
        ours = switchbert.models.build_model(model.config.replace(vlbert_text_visual="img")).eval()
        ours.load_state_dict(model.state_dict())
        text_img, _, _ = ours.embeddings(batch)
        torch.testing.assert_close(text_img, _vlbert_text_embedding(model, batch, 0), rtol=1e-5, atol=1e-5)
        assert (text_img - text).abs().max() > 1e-2
    # A model built by hand with our default loads, but the report warns that it is not VOLTA's.
    report = import_volta(model_for("vlbert"), sd)
    assert any("WARNING" in n and "vlbert_text_visual='img'" in n for n in report.notes)
    with pytest.raises(ValueError, match="vlbert_text_visual"):
        model.config.replace(vlbert_text_visual="first")


def test_imported_heads_are_read_by_evaluation_and_pretraining(tmp_path, capsys):
    sd = volta_state("vlbert")
    sd["bert.embeddings.word_embeddings.weight"] = torch.randn(30522, Dt)
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"]
    sd["cls.predictions.bias"] = torch.randn(30522)
    src = tmp_path / "pytorch_model_9.bin"
    torch.save(sd, src)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["import-checkpoint", str(src), str(tmp_path / "out"), "--from", "volta",
                              "--preset", "vlbert-tiny", "--strict"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "parameters NOT initialised (0): none" in out and "heads.safetensors" in out
    loaded = switchbert.load_pretrained(tmp_path / "out")
    assert loaded.config.vlbert_text_visual == "last" and loaded.config.mrc_head_norm is False
    heads = pretrain_heads_for(loaded)
    load_heads(heads, tmp_path / "out")  # what switchbert evaluate (and pretraining init_from) does
    assert torch.equal(heads.itm.classifier.weight, sd["cls.bi_seq_relationship.weight"].flip(0))
    assert heads.mlm.decoder_weight is loaded.get_word_embeddings().weight
    from switchbert.train.trainer import _continue_heads  # pretraining with model.init_from=out
    fresh = pretrain_heads_for(loaded)
    _continue_heads(fresh, tmp_path / "out")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), heads.state_dict().values()))
    args.no_heads = True
    assert args.func(args) == 0
    assert not (tmp_path / "out" / "heads.safetensors").exists()


def test_vlbert_batch_mates_only_through_region_padding():
    """VOLTA's VL-BERT shifts a text position by the region count once it reaches the batch's shortest
    text (an in-place add on an expanded arange), so there a sample's output depends on its batch mates'
    text lengths; ours does not. The last-slot choice (kept for imports) does depend on how far regions
    are padded, as in VOLTA."""
    model = switchbert.models.build_model(model_for("vlbert").config.replace(vlbert_text_visual="last")).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in (model.embeddings.text_visual_norm.weight, model.embeddings.feat_proj.weight):
            torch.nn.init.normal_(p)
        batch = random_batch(model.config, batch_size=3, num_text=8, num_regions=4, seed=1, padded=False)
        short = switchbert.batch.Batch(**{**batch.__dict__, "text_mask": batch.text_mask.clone()})
        short.text_mask[1:, 3:] = False  # batch mates with shorter texts; sample 0 unchanged
        short.text_ids[1:, 3:] = 0
        torch.testing.assert_close(model(short).text_hidden[0], model(batch).text_hidden[0], rtol=0, atol=1e-6)
        padded = switchbert.batch.Batch(**{**batch.__dict__, "region_mask": batch.region_mask.clone()})
        padded.region_mask[0, 3:] = False  # sample 0 loses its last region: its last slot is now padding
        padded.region_feats[0, 3:] = 0
        padded.region_boxes[0, 3:] = 0
        trimmed = switchbert.batch.Batch(text_ids=batch.text_ids[:1], text_mask=batch.text_mask[:1],
                                         region_feats=padded.region_feats[:1, :3],
                                         region_boxes=padded.region_boxes[:1, :3],
                                         region_mask=padded.region_mask[:1, :3])
        a, b = model(padded).text_hidden[0], model(trimmed).text_hidden[0]
        assert (a - b).abs().max() > 1e-3  # same sample, same regions, different padding: VOLTA's behaviour
