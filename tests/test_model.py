"""Switch-BERT model: gradients, routes, determinism, variants, save/load, overfitting, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import switchbert
from switchbert.batch import Batch
from switchbert.config import ModelConfig
from tests.helpers import batch_for, tiny_model

VARIANTS = {
    "switch-bert": {},
    "sab-only": {"sib": None},
    "sib-only": {"sab_modes": ("J",)},
    "neither": {"sab_modes": ("J",), "sib": None},
    "last3": {"sib": "last3"},
    "top2": {"top_k": 2},
    "top1": {"top_k": 1},
    "hard-st": {"switch_training": "hard_st"},
    "concat": {"alignment": "concat"},
    "rich": {"alignment": "rich"},
    "subset": {"sab_modes": ("SC", "CS")},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_soft_training_gives_every_parameter_a_gradient(variant):
    model = tiny_model(torch.float32, **VARIANTS[variant]).train()
    batch = batch_for(model, torch.float32, batch_size=4)
    out = model(batch)
    loss = out.pooled.pow(2).sum() + out.text_hidden.sum() + out.region_hidden[:, 1:].pow(2).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # The position embedding rows past T and the [PAD] row never get a gradient; every other tensor must.
    assert missing == [], f"no gradient for {missing}"
    assert torch.isfinite(out.pooled).all()


def test_switchers_receive_gradient_through_the_mixture():
    model = tiny_model(torch.float64).train()
    batch = batch_for(model)
    model(batch).pooled.sum().backward()
    for name, p in model.named_parameters():
        if "switchers" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_per_sample():
    model = tiny_model(torch.float64, seed=3)
    # Make routing decisive so that samples differ: large switcher output weights.
    for s in model.switchers():
        torch.nn.init.normal_(s.mlp[-1].weight, std=5.0)
    model.eval()
    batch = batch_for(model, batch_size=8, padded=True, seed=4)
    a, b = model(batch), model(batch)
    assert torch.equal(a.text_hidden, b.text_hidden) and torch.equal(a.pooled, b.pooled)
    assert a.route_strings() == b.route_strings()
    for r in a.routes:
        assert torch.equal(r.sab_weights, F.one_hot(r.sab_choice, len(r.modes)).to(r.sab_weights.dtype))
    assert len(set(a.route_strings())) > 1, "every sample took the same route"
    # per sample: a sample's output does not depend on the others in the batch
    single = model(batch.select(torch.tensor([2])))
    torch.testing.assert_close(single.text_hidden, a.text_hidden[2:3])
    assert single.route_strings() == [a.route_strings()[2]]


def test_eval_hard_path_equals_reference_path():
    model = tiny_model(torch.float64, seed=5).eval()
    ref = tiny_model(torch.float64, seed=5, attention_impl="reference").eval()
    ref.load_state_dict(model.state_dict())
    batch = batch_for(model, batch_size=5, seed=6)
    a, b = model(batch), ref(batch)
    valid_r = a.region_mask[..., None]
    torch.testing.assert_close(a.text_hidden, b.text_hidden, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(a.region_hidden * valid_r, b.region_hidden * valid_r, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("impl", ["fused", "sdpa", "flex"])
def test_soft_training_fused_equals_reference_with_same_noise(impl):
    model = tiny_model(torch.float64, seed=7, attention_impl=impl).train()
    ref = tiny_model(torch.float64, seed=7, attention_impl="reference").train()
    ref.load_state_dict(model.state_dict())
    batch = batch_for(model, batch_size=5, seed=8)
    torch.manual_seed(0)
    a = model(batch)
    torch.manual_seed(0)
    b = ref(batch)
    torch.testing.assert_close(a.text_hidden, b.text_hidden, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-10, rtol=1e-8)


def test_routes_record_probabilities_and_choices():
    model = tiny_model(torch.float64).train()
    out = model(batch_for(model, batch_size=3))
    assert len(out.routes) == model.config.num_layers
    first, second = out.routes[0], out.routes[1]
    assert first.sib_choice is None and second.sib_choice.shape == (3, 2)
    assert first.sab_probs.shape == (3, 4)
    torch.testing.assert_close(first.sab_probs.sum(-1), torch.ones(3, dtype=torch.float32))
    torch.testing.assert_close(second.sib_weights.sum(-1), torch.ones(3, 2, dtype=torch.float32))
    assert second.sib_candidates == ("out", "mid", "in")
    assert torch.equal(first.sab_choice, first.sab_weights.argmax(-1))
    # near-uniform routing at initialisation (last switcher layer ~ 0)
    assert (first.sab_probs - 0.25).abs().max() < 0.05


def test_neither_has_no_routes_and_is_a_plain_single_stream_bert():
    model = tiny_model(torch.float64, sab_modes=("J",), sib=None)
    assert model.switchers() == []
    out = model.eval()(batch_for(model))
    assert out.routes == ()


def test_last3_offers_the_inputs_that_exist():
    model = tiny_model(torch.float64, sib="last3").train()
    out = model(batch_for(model))
    assert out.routes[1].sib_candidates == ("l-1", "l-2")
    assert out.routes[2].sib_candidates == ("l-1", "l-2", "l-3")


@pytest.mark.parametrize("top_k", [1, 2])
def test_top_k_limits_active_options(top_k):
    model = tiny_model(torch.float64, top_k=top_k).train()
    out = model(batch_for(model, batch_size=6))
    for r in out.routes:
        assert ((r.sab_weights > 0).sum(-1) <= top_k).all()
        torch.testing.assert_close(r.sab_weights.sum(-1), torch.ones(6, dtype=torch.float32))
        if r.sib_weights is not None:  # top_k is the SAB's; the SIB has its own sib_top_k (default all)
            assert ((r.sib_weights > 0).sum(-1) == r.sib_weights.shape[-1]).all()


def test_padding_changes_no_valid_output_of_the_model():
    model = tiny_model(torch.float64, seed=9).eval()
    batch = batch_for(model, batch_size=3, padded=False, num_text=6, num_regions=4, seed=10)
    base = model(batch)
    pad_t, pad_r = 3, 2
    B = 3
    padded = Batch(
        text_ids=torch.cat([batch.text_ids, torch.full((B, pad_t), 7)], 1),
        text_mask=torch.cat([batch.text_mask, torch.zeros(B, pad_t, dtype=torch.bool)], 1),
        region_feats=torch.cat([batch.region_feats, 50 * torch.rand(B, pad_r, 64, dtype=torch.float64)], 1),
        region_boxes=torch.cat([batch.region_boxes, torch.rand(B, pad_r, 5, dtype=torch.float64)], 1),
        region_mask=torch.cat([batch.region_mask, torch.zeros(B, pad_r, dtype=torch.bool)], 1),
    )
    out = model(padded)
    torch.testing.assert_close(out.text_hidden[:, :6], base.text_hidden, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(out.region_hidden[:, :5], base.region_hidden, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(out.pooled, base.pooled, atol=1e-10, rtol=1e-8)
    assert out.route_strings() == base.route_strings()


def test_sample_without_image_sees_text_only():
    model = tiny_model(torch.float64, sab_modes=("J",), sib=None).eval()
    batch = batch_for(model, batch_size=2, padded=False)
    batch.image_mask = torch.tensor([False, True])
    out = model(batch)
    assert not out.region_mask[0].any() and out.region_mask[1].all()
    # changing the image of the text-only sample changes nothing in its text states
    batch2 = batch_for(model, batch_size=2, padded=False, seed=99)
    batch2.text_ids, batch2.text_mask, batch2.image_mask = batch.text_ids, batch.text_mask, batch.image_mask
    out2 = model(batch2)
    torch.testing.assert_close(out.text_hidden[0], out2.text_hidden[0])
    assert not torch.allclose(out.text_hidden[1], out2.text_hidden[1])


def test_save_load_round_trip(tmp_path):
    model = tiny_model(torch.float32, seed=11, sib="last3", top_k=2).eval()
    batch = batch_for(model, torch.float32)
    model.save_pretrained(tmp_path / "m")
    loaded = switchbert.load_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    a, b = model(batch), loaded(batch)
    assert torch.equal(a.text_hidden, b.text_hidden) and torch.equal(a.pooled, b.pooled)
    assert a.route_strings() == b.route_strings()


def test_load_rejects_weights_that_do_not_match_the_config(tmp_path):
    model = tiny_model(torch.float32)
    model.save_pretrained(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    raw = json.loads(cfg_path.read_text())
    raw["config"]["intermediate_size"] = 128
    raw["config"]["sib"] = None
    cfg_path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"does not match its config[\s\S]*wrong shape[\s\S]*ffn.up.weight[\s\S]*unexpected"):
        switchbert.load_pretrained(tmp_path / "m")


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny", hidden_dropout=0.0, attention_dropout=0.0, fusion_dropout=0.0)
    batch = batch_for(model, torch.float32, batch_size=8, seed=12)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    head = torch.nn.Linear(model.config.pooler_size, 3)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    model.set_temperature(0.5)
    for _ in range(60):
        loss = F.cross_entropy(head(model(batch).pooled), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        final = F.cross_entropy(head(model(batch).pooled), labels)
        acc = (head(model(batch).pooled).argmax(-1) == labels).float().mean()
    assert final < 0.1 and acc == 1.0


def test_temperature_is_set_on_every_switcher():
    model = tiny_model(torch.float32)
    model.set_temperature(0.3)
    assert all(abs(float(s.tau) - 0.3) < 1e-7 for s in model.switchers())
    with pytest.raises(ValueError):
        model.set_temperature(0.0)


# ---- bad input -------------------------------------------------------------------------------------

def _good(model):
    return batch_for(model, torch.float32, batch_size=2, num_text=5, num_regions=3)


@pytest.mark.parametrize(
    "field,value,pattern",
    [
        ("region_feats", torch.zeros(2, 3, 10), r"region_feats.*feature size 10.*expects 64.*\(2, 3, 64\)"),
        ("region_boxes", torch.zeros(2, 3, 4), r"region_boxes.*\(2, 3, 5\).*\(2, 3, 4\)"),
        ("text_mask", torch.ones(2, 4, dtype=torch.bool), r"text_mask.*\(2, 5\).*\(2, 4\)"),
        ("region_mask", torch.ones(2, 2, dtype=torch.bool), r"region_mask.*\(2, 3\).*\(2, 2\)"),
        ("region_mask", torch.ones(2, 3), r"region_mask.*bool"),
        ("region_feats", None, r"region_feats is missing.*both modalities"),
        ("text_ids", None, r"text_ids is missing"),
    ],
)
def test_bad_input_names_the_field_and_shapes(field, value, pattern):
    model = tiny_model(torch.float32)
    batch = _good(model)
    setattr(batch, field, value)
    with pytest.raises(ValueError, match=pattern):
        model(batch)


def test_empty_batch_is_rejected():
    model = tiny_model(torch.float32)
    batch = _good(model).select(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="empty batch"):
        model(batch)


def test_config_validation_messages():
    with pytest.raises(ValueError, match=r"sab_modes.*unknown modes \['XX'\]"):
        ModelConfig(sab_modes=("SS", "XX"))
    with pytest.raises(ValueError, match=r"num_heads.*not divisible"):
        ModelConfig(hidden_size=100, num_heads=12)
    with pytest.raises(ValueError, match=r"sib.*'first'"):
        ModelConfig(sib="first")
    with pytest.raises(ValueError, match=r"unknown ModelConfig fields \['hiden_size'\]"):
        switchbert.create_model("switchbert-tiny", hiden_size=3)
    with pytest.raises(ValueError, match="unknown preset"):
        switchbert.create_model("switchbert-huge")
