"""Route statistics: counts against hand-built routes, top architectures, JSON round trip, log keys."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from switchbert.analysis.routes import (Architecture, LayerChoice, RouteCollector, RouteStats, collect_routes,
                                        route_probability_log)
from switchbert.config import MODES
from switchbert.outputs import LayerRoute
from tests.helpers import batch_for, tiny_model



CANDS = ("out", "mid", "in")


def hard_route(modes: list[str], sib: list[tuple[str, str]] | None = None, cands=CANDS, probs=None) -> LayerRoute:
    """A layer's eval-mode route for len(modes) samples, from mode names and (text, region) inputs."""
    choice = torch.tensor([MODES.index(m) for m in modes])
    B = len(modes)
    p = probs if probs is not None else torch.full((B, 4), 0.25)
    route = LayerRoute(modes=MODES, sab_probs=p, sab_weights=F.one_hot(choice, 4).float(), sab_choice=choice)
    if sib is not None:
        sc = torch.tensor([[cands.index(t), cands.index(r)] for t, r in sib])
        route.sib_candidates = cands
        route.sib_probs = torch.full((B, 2, len(cands)), 1.0 / len(cands))
        route.sib_weights = F.one_hot(sc, len(cands)).float()
        route.sib_choice = sc
    return route


# Five samples, three layers. Samples 0, 1 and 3 take the same whole route.
LAYER1 = ["SS", "SS", "J", "SS", "SC"]
LAYER2 = ["SC", "SC", "SC", "SC", "CS"]
SIB2 = [("out", "mid"), ("out", "mid"), ("out", "mid"), ("out", "mid"), ("in", "in")]
LAYER3 = ["J", "J", "J", "J", "J"]
SIB3 = [("out", "in"), ("out", "in"), ("out", "in"), ("out", "in"), ("mid", "out")]


def hand_routes() -> tuple[LayerRoute, ...]:
    return hard_route(LAYER1), hard_route(LAYER2, SIB2), hard_route(LAYER3, SIB3)


def test_counts_match_hand_built_routes():
    c = RouteCollector()
    c.update(hand_routes())
    s = c.stats()
    assert s.num_samples == 5
    assert [layer.mode_counts for layer in s.layers] == [(3, 1, 0, 1), (0, 4, 1, 0), (0, 0, 0, 5)]
    assert s.layers[0].mode_frequencies() == {"SS": 0.6, "SC": 0.2, "CS": 0.0, "J": 0.2}
    assert s.layers[0].sib_candidates == ()
    assert s.layers[1].sib_counts == {"text": (4, 0, 1), "region": (0, 4, 1)}
    assert s.layers[2].sib_frequencies("region") == {"out": 0.2, "mid": 0.0, "in": 0.8}
    assert s.layers[1].mode_mean_probs == pytest.approx((0.25,) * 4)


def test_top_architectures_and_shares():
    c = RouteCollector(top_n=3)
    c.update(hand_routes())
    c.update(hand_routes())  # every count doubles; shares stay
    s = c.stats()
    assert s.num_samples == 10 and s.num_architectures == 3
    first = s.top_architectures[0]
    assert first.count == 6 and first.share == pytest.approx(0.6)
    assert first.layers == (LayerChoice("SS"), LayerChoice("SC", "out", "mid"), LayerChoice("J", "out", "in"))
    assert first.signature == "L1:SS L2:SC[t<-out,r<-mid] L3:J[t<-out,r<-in]"
    assert sorted(a.count for a in s.top_architectures) == [2, 2, 6]
    assert c.stats(top_n=1).top_architectures == (first,)


def test_signature_matches_encoder_output_route_strings():
    model = tiny_model().eval()
    batch = batch_for(model, batch_size=6)
    with torch.no_grad():
        out = model(batch)
    c = RouteCollector(model.config, top_n=100)
    c.update_output(out)
    expected = {}
    for line in out.route_strings():
        expected[line] = expected.get(line, 0) + 1
    assert {a.signature: a.count for a in c.stats().top_architectures} == expected


def test_sample_mask_leaves_padding_samples_out():
    routes = hand_routes()
    c = RouteCollector()
    c.update(routes, sample_mask=torch.tensor([True, True, True, False, False]))
    s = c.stats()
    assert s.num_samples == 3
    assert s.layers[0].mode_counts == (2, 0, 0, 1)
    assert s.top_architectures[0].count == 2


def test_last3_variable_candidates_per_layer():
    l2 = hard_route(["SS", "J"], [("l-1", "l-2"), ("l-2", "l-2")], cands=("l-1", "l-2"))
    l3 = hard_route(["SS", "SS"], [("l-3", "l-1"), ("l-3", "l-3")], cands=("l-1", "l-2", "l-3"))
    c = RouteCollector()
    c.update((hard_route(["J", "J"]), l2, l3))
    s = c.stats()
    assert s.layers[1].sib_counts == {"text": (1, 1), "region": (0, 2)}
    assert s.layers[2].sib_counts == {"text": (0, 0, 2), "region": (1, 0, 1)}
    assert RouteStats.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    # The real model with sib="last3" (C = 2 then 3) goes through the same path.
    model = tiny_model(sib="last3")
    stats = collect_routes(model, [batch_for(model, batch_size=5, seed=k) for k in range(2)])
    assert [len(layer.sib_candidates) for layer in stats.layers] == [0, 2, 3]
    assert stats.num_samples == 10


def test_layout_change_is_an_error():
    c = RouteCollector()
    c.update(hand_routes())
    with pytest.raises(ValueError, match="different layout"):
        c.update(hand_routes()[:2])


def test_json_round_trip_and_markdown():
    model = tiny_model()
    stats = collect_routes(model, [batch_for(model, batch_size=4, seed=k) for k in range(3)], task="demo")
    text = json.dumps(stats.to_dict())
    back = RouteStats.from_dict(json.loads(text))
    assert back == stats
    assert back.flops is not None and back.flops.num_samples == 12
    md = stats.to_markdown()
    assert "| L1 |" in md and "Most frequent architectures" in md and "text<-mid" in md
    arch = stats.top_architectures[0]
    assert Architecture.from_dict(arch.to_dict()) == arch


def test_collect_routes_runs_eval_mode_and_restores_training():
    model = tiny_model()
    model.train()
    batches = [batch_for(model, batch_size=4, seed=k) for k in range(3)]
    stats = collect_routes(model, batches, max_samples=10)
    assert model.training
    assert stats.num_samples == 10
    # Eval routes are deterministic: the same numbers twice, and (Batch, labels) pairs are accepted.
    again = collect_routes(model, [(b, None) for b in batches], max_samples=10)
    assert again == stats
    assert stats.flops.soft_samples == 0  # hard routes


def test_fixed_architecture_has_one_route():
    model = tiny_model(sab_modes=("J",), sib=None)
    stats = collect_routes(model, [batch_for(model, batch_size=4)])
    assert stats.layers == () and stats.num_samples == 4
    assert stats.num_architectures == 1 and stats.top_architectures[0].share == 1.0
    assert "fixed architecture" in stats.to_markdown()


def test_route_probability_log_keys_and_means():
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    r1 = hard_route(["SS", "J"], probs=probs)
    r2 = hard_route(["SS", "SS"], [("out", "in"), ("mid", "in")], probs=probs)
    r2.sib_probs = torch.tensor([[[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]], [[0.1, 0.3, 0.6], [0.0, 1.0, 0.0]]])
    log = route_probability_log((r1, r2))
    assert log["routes/sab/L1/SS"] == pytest.approx(0.4)
    assert log["routes/sab/L2/J"] == pytest.approx(0.4)
    assert log["routes/sib/L2/text/in"] == pytest.approx(0.4)
    assert log["routes/sib/L2/region/mid"] == pytest.approx(0.5)
    assert "routes/sib/L1/text/out" not in log
    assert len(log) == 8 + 6
    # From a real training-mode output: every mode of every layer, probabilities summing to one per layer.
    model = tiny_model()
    out = model(batch_for(model))
    log = route_probability_log(out)
    for i in (1, 2, 3):
        assert sum(log[f"routes/sab/L{i}/{m}"] for m in MODES) == pytest.approx(1.0)
    assert sum(log[f"routes/sib/L3/region/{c}"] for c in CANDS) == pytest.approx(1.0)
    assert all(isinstance(v, float) for v in log.values())
    # A SIB-only model (one mode, J) logs only its inputs.
    model = tiny_model(sab_modes=("J",))
    out = model(batch_for(model))
    log = route_probability_log(out)
    assert log and all(k.startswith("routes/sib/") for k in log)


# -- how sure the switchers are (near-ties: a route share that says little) --------------------------------------


def test_confidence_top_probability_entropy_and_margin_by_hand():
    """Layer 1: p = (0.7, 0.1, 0.1, 0.1) for every sample; layer 2 uniform; SIB uniform over 3."""
    import math

    from switchbert.analysis.routes import NEAR_TIE_MARGIN

    sure = torch.tensor([[0.7, 0.1, 0.1, 0.1]] * 5)
    c = RouteCollector()
    c.update((hard_route(LAYER1, probs=sure), hard_route(LAYER2, SIB2), hard_route(LAYER3, SIB3)))
    s = c.stats()
    l1, l2 = s.layers[0].mode_confidence, s.layers[1].mode_confidence
    assert l1.mean_top_prob == pytest.approx(0.7) and l1.mean_margin == pytest.approx(0.6)
    assert l1.mean_entropy == pytest.approx(-(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)))
    assert not l1.near_tie
    assert l2.mean_top_prob == pytest.approx(0.25) and l2.mean_margin == pytest.approx(0.0)
    assert l2.mean_entropy == pytest.approx(math.log(4)) and l2.near_tie
    sib = s.layers[1].sib_confidence["region"]
    assert sib.options == 3 and sib.mean_entropy == pytest.approx(math.log(3)) and sib.near_tie
    assert NEAR_TIE_MARGIN == 0.1
    assert [(layer, name) for layer, name, _ in s.near_ties()] == [
        (2, "SAB"), (2, "SIB text"), (2, "SIB region"), (3, "SAB"), (3, "SIB text"), (3, "SIB region")]
    md = s.to_markdown()
    assert "6 of 7 switchers are near-ties" in md and "| L2 | SAB | 4 | 0.250 |" in md
    assert "| L2 (near-tie) |" in md and "| L1 |" in md
    again = RouteStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert again.layers[1].sib_confidence == s.layers[1].sib_confidence
    assert again.layers[0].mode_confidence == l1


def test_a_margin_per_sample_is_decided_even_when_mean_probabilities_are_even():
    """Half the samples sure of SS, half sure of J: the mean probabilities are even, but no sample is a tie."""
    p = torch.tensor([[0.9, 0.0, 0.0, 0.1]] * 2 + [[0.1, 0.0, 0.0, 0.9]] * 2)
    c = RouteCollector()
    c.update((hard_route(["SS", "SS", "J", "J"], probs=p),))
    conf = c.stats().layers[0].mode_confidence
    assert conf.mean_margin == pytest.approx(0.8) and not conf.near_tie
    assert "The switcher is decided" in c.stats().to_markdown()


def test_an_undecided_model_does_not_report_its_route_as_a_finding():
    """A freshly initialised Switch-BERT routes near-uniformly: one route for every sample is an argmax over
    ties, and every report says so in words (the demo's section, routes.md's summary, the route tables)."""
    from switchbert.analysis.report import routes_section_markdown, write_report

    model = tiny_model().eval()
    stats = collect_routes(model, [batch_for(model, batch_size=16)])
    assert stats.near_ties() and len(stats.near_ties()) == len(stats.switcher_confidence())
    section = routes_section_markdown({"vqa": stats})
    assert "Undecided: all 7 switchers are near-ties" in section  # 3 SAB + 2 SIB x 2 modalities
    assert "do not show a preference the model learnt" in section
    assert "| L1 | SAB | 4 |" in section
    md = stats.to_markdown()
    assert "Most frequent architectures (every switcher a near-tie" in md
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        files = write_report(d, {"vqa": stats}, figures=False)
        text = files.markdown.read_text()
        assert "7 of 7 (undecided)" in text and "not a route the model chose" in text
