"""FLOPs along routes: a hand count, torch's FlopCounterMode on real forwards, top-K awareness, totals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import switchbert
from switchbert.analysis.flops import (FlopsAccumulator, FlopsTally, attention_pairs, default_baselines,
                                       expected_flops, fixed_flops, flops_over_run, route_flops)
from switchbert.config import MODES
from switchbert.outputs import LayerRoute
from switchbert.data.random_batch import random_batch
from tests.helpers import NO_DROPOUT



TINY = switchbert.get_config("switchbert-tiny")  # L=3, D=32, F=64, region features 64, pooler 48


def one_hot_route(modes: list[str], sib: tuple[int, int] | None = None, B: int = 1) -> tuple[LayerRoute, ...]:
    """A hard route, the same for B samples: one mode per layer, SIB choice index (text, region)."""
    routes = []
    for i, m in enumerate(modes):
        w = F.one_hot(torch.tensor([MODES.index(m)] * B), 4).float()
        r = LayerRoute(MODES, w, w, w.argmax(-1))
        if i > 0 and sib is not None:
            r.sib_candidates = ("out", "mid", "in")
            r.sib_weights = F.one_hot(torch.tensor([list(sib)] * B), 3).float()
            r.sib_probs, r.sib_choice = r.sib_weights, r.sib_weights.argmax(-1)
        routes.append(r)
    return tuple(routes)


def test_hand_count_tiny_config():
    # One sample, T = 3 text tokens, R = 2 region tokens (IMG + 1 region), N = 5; route SS, SC, CS.
    T, R = 3, 2
    embeddings = 2 * R * 64 * 32 + 2 * R * 5 * 32  # feature and box projections: 8192 + 640 = 8832
    qkvo = 4 * 2 * 5 * 32 * 32  # 40960 per layer
    ffn = 2 * 2 * 5 * 32 * 64  # 40960 per layer
    attn = {"SS": 4 * (9 + 4) * 32, "SC": 4 * (9 + 6) * 32, "CS": 4 * (6 + 4) * 32, "J": 4 * 25 * 32}
    pool = 2 * 2 * 5 * 32  # each switcher pools with a (2 x N) @ (N x D) product: 640
    sab_switch = pool + 2 * 32 * 32 + 2 * 32 * 4  # hadamard alignment -> Linear(32, 32) -> Linear(32, 4): 2944
    sib_switch = pool + 2 * 32 * 32 + 2 * 32 * 6  # Linear(32, 32) -> Linear(32, 2 x 3): 3072
    pooler = 2 * (2 * 32 * 48)  # 6144
    expected = embeddings + 3 * (qkvo + ffn) + attn["SS"] + attn["SC"] + attn["CS"] + 3 * sab_switch \
        + 2 * sib_switch + pooler
    assert expected == 280576  # the hand count, written out
    f = route_flops(TINY, one_hot_route(["SS", "SC", "CS"], sib=(0, 2)), torch.tensor([T]), torch.tensor([R]))
    paper, fused = f["paper"].sum(), f["fused"].sum()
    assert paper.total == expected
    assert paper.attention == attn["SS"] + attn["SC"] + attn["CS"] and paper.sib_mixing == 0  # selection is free
    # Fused: one joint-size attention per layer; SIB multiplies all 3 candidates: 2*3*T*D + 2*3*R*D.
    assert fused.attention == 3 * attn["J"]
    assert fused.sib_mixing == 2 * (2 * 3 * T * 32 + 2 * 3 * R * 32)
    assert fused.matmul == expected - paper.attention + 3 * attn["J"]


@pytest.mark.parametrize("mode,pairs", [("SS", 3 * 3 + 2 * 2), ("SC", 3 * 3 + 2 * 3), ("CS", 3 * 2 + 2 * 2),
                                        ("J", 5 * 5)])
def test_attention_pairs_table_1(mode, pairs):
    assert attention_pairs(mode, 3, 2) == pairs


def _torch_count(model, batch) -> int:
    # The math SDPA backend decomposes into matmuls that FlopCounterMode sees (the CPU flash kernel has
    # no FLOP formula); the other paths are plain matmuls.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        out = model(batch)
    return int(counter.get_total_flops()), out


@pytest.mark.parametrize("preset", ["uniter-tiny", "lxmert-tiny", "vilbert-tiny", "visualbert-tiny", "vlbert-tiny"])
def test_fixed_models_match_flop_counter(preset):
    torch.manual_seed(0)
    model = switchbert.create_model(preset, **NO_DROPOUT).eval()
    batch = random_batch(model.config, batch_size=3, num_text=7, num_regions=4, padded=False)
    counted, out = _torch_count(model, batch)
    f = route_flops(model.config, out.routes, out.text_mask.sum(1), out.region_mask.sum(1))
    assert f["paper"].sum().matmul == counted
    assert f["fused"].sum().matmul == counted
    # Linear layers alone: the addmm FLOPs FlopCounterMode gives without attention.
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(batch)
    addmm = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "addmm" in str(k))
    b = f["paper"].sum()
    assert addmm == b.matmul - b.attention


def test_switching_model_fused_count_matches_flop_counter():
    """Soft training forward (fused kernel) and hard eval forward (masked SDPA) both cost joint attention."""
    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny", **NO_DROPOUT)
    batch = random_batch(model.config, batch_size=3, num_text=7, num_regions=4, padded=False)
    for training in (True, False):
        model.train(training)
        counted, out = _torch_count(model, batch)
        f = route_flops(model.config, out.routes, out.text_mask.sum(1), out.region_mask.sum(1))
        assert f["fused"].sum().matmul == counted  # switcher MLPs included
        if training:  # soft: every mode active, paper-style dearer than fused
            assert f["paper"].sum().attention > f["fused"].sum().attention
        else:  # hard: one mode per layer, never dearer than joint
            assert f["paper"].sum().attention <= f["fused"].sum().attention


def test_top_k_fewer_active_modes_cost_less_paper_style():
    T, R = torch.tensor([10]), torch.tensor([5])

    def layer(weights):
        w = torch.tensor([weights])
        return LayerRoute(MODES, w, w, w.argmax(-1))

    all4 = (layer([0.4, 0.3, 0.2, 0.1]),) * 3
    top2 = (layer([0.6, 0.4, 0.0, 0.0]),) * 3  # SS + SC kept by top-2
    top1 = (layer([1.0, 0.0, 0.0, 0.0]),) * 3
    cost = {k: route_flops(TINY, r, T, R) for k, r in (("4", all4), ("2", top2), ("1", top1))}
    paper = {k: int(v["paper"].total.item()) for k, v in cost.items()}
    fused = {k: int(v["fused"].total.item()) for k, v in cost.items()}
    assert paper["4"] > paper["2"] > paper["1"]
    assert len(set(fused.values())) == 1  # the fused kernel costs the same whatever the mixture
    D = 32
    assert paper["4"] - paper["2"] == 3 * 4 * D * (attention_pairs("CS", 10, 5) + attention_pairs("J", 10, 5))
    # A real top-2 model in training: exactly two modes active per layer and sample.
    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny", top_k=2, **NO_DROPOUT).train()
    batch = random_batch(model.config, batch_size=4, padded=True)
    with torch.no_grad():
        out = model(batch)
    assert all(int((r.sab_weights > 0).sum(-1).max()) == 2 for r in out.routes)
    Tn, Rn = out.text_mask.sum(1), out.region_mask.sum(1)
    f = route_flops(model.config, out.routes, Tn, Rn)
    expected_attn = sum(
        4 * D * sum(attention_pairs(m, Tn, Rn) * (r.sab_weights[:, j] > 0) for j, m in enumerate(MODES))
        for r in out.routes)
    assert torch.equal(f["paper"].attention, expected_attn)


def test_all_joint_paper_equals_fused_equals_uniter():
    T, R = torch.tensor([38, 20]), torch.tensor([37, 11])
    uniter = switchbert.get_config("uniter-tiny")
    f = route_flops(TINY, one_hot_route(["J", "J", "J"], B=2), T, R)
    fixed = fixed_flops(uniter, T, R)
    assert torch.equal(f["paper"].attention, f["fused"].attention)
    assert torch.equal(f["paper"].attention, fixed.attention)
    assert torch.equal(f["paper"].matmul - f["paper"].switchers, fixed.matmul)


def test_accumulator_and_run_totals():
    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny", **NO_DROPOUT).train()
    acc = FlopsAccumulator(model.config)
    per_sample = []
    for seed in range(3):
        batch = random_batch(model.config, batch_size=4, seed=seed, padded=True)
        with torch.no_grad():
            out = model(batch)
        keep = torch.tensor([True, True, True, seed != 2])  # one padding sample in the last batch
        acc.update(out.routes, out.text_mask, out.region_mask, keep)
        f = route_flops(model.config, out.routes, out.text_mask.sum(1), out.region_mask.sum(1))
        per_sample += f["paper"].total[keep].tolist()
    tally = acc.tally()
    assert tally.num_samples == 11 and sum(tally.token_counts.values()) == 11
    assert tally.paper.total == sum(per_sample)
    assert tally.soft_samples == 11  # soft training routes mix modes
    assert FlopsTally.from_dict(tally.to_dict()) == tally
    run = flops_over_run(tally, model.config, samples=1000, epochs=2)
    rows = {(r.name, r.notion): r for r in run.rows}
    assert rows[("switchbert-tiny", "paper")].total == pytest.approx(tally.mean("paper") * 1000 * 2 * 3)
    # Baselines are counted on the same token counts.
    uniter = default_baselines(model.config)["UNITER"]
    mean_uniter = sum(fixed_flops(uniter, t, r).total * n for (t, r), n in tally.token_counts.items()) / 11
    assert rows[("UNITER", "fixed")].per_sample == pytest.approx(mean_uniter)
    assert rows[("UNITER", "fixed")].relative == 1.0
    assert "| LXMERT | fixed |" in run.to_markdown()


def test_expected_flops_and_base_numbers():
    """BERT-base at 38 + 37 tokens: the numbers the docs quote."""
    sb, top2, uniter = (switchbert.get_config(n) for n in ("switchbert-base", "switchbert-base-top2", "uniter-base"))
    u = fixed_flops(uniter, 38, 37).total
    assert u == 13_067_380_224
    full = expected_flops(sb, 38, 37)
    two = expected_flops(top2, 38, 37)
    infer = expected_flops(sb, 38, 37, training=False)
    assert full["paper"].total > two["paper"].total > infer["paper"].total
    assert full["fused"].total == two["fused"].total == infer["fused"].total
    # Fused Switch-BERT = UNITER + switchers + SIB mixing (same attention).
    assert full["fused"].attention == fixed_flops(uniter, 38, 37).attention
    assert fixed_flops(switchbert.get_config("lxmert-base"), 38, 37).total > u
    assert fixed_flops(switchbert.get_config("vilbert-base"), 38, 37).total > u
    # default_baselines reproduces the base presets' dual-stream layouts.
    base = default_baselines(sb)
    for name, preset in (("LXMERT", "lxmert-base"), ("ViLBERT", "vilbert-base")):
        assert fixed_flops(base[name], 38, 37).total == fixed_flops(switchbert.get_config(preset), 38, 37).total


# -- active paths along a training run (a threshold, not "weight > 0": a negligible path would count) ---------


def _soft_layer(weights, B: int = 1) -> LayerRoute:
    w = torch.tensor([weights] * B)
    return LayerRoute(MODES, w, w, w.argmax(-1))


def test_a_path_with_a_negligible_weight_is_not_active():
    """A settled switcher still gives every mode a Gumbel weight > 0; counting those would say every path
    runs. With the default threshold (0.01) only the dominant mode runs."""
    from switchbert.analysis.flops import ACTIVE_WEIGHT_THRESHOLD

    T, R = torch.tensor([10]), torch.tensor([5])
    settled = (_soft_layer([0.002, 0.001, 0.002, 0.995]),) * 3
    joint_only = one_hot_route(["J", "J", "J"])
    assert ACTIVE_WEIGHT_THRESHOLD == 0.01
    default = route_flops(TINY, settled, T, R)["paper"].sum()
    assert default == route_flops(TINY, joint_only, T, R)["paper"].sum()
    every_nonzero = route_flops(TINY, settled, T, R, min_weight=0.0)["paper"].sum()
    D = 32
    assert every_nonzero.attention - default.attention == 3 * 4 * D * sum(
        attention_pairs(m, 10, 5) for m in ("SS", "SC", "CS"))


def test_gumbel_weights_at_low_temperature_are_all_non_zero_but_few_are_active():
    """The issue's number: at tau = 0.1 with near-uniform p, ~3.99 of 4 modes have a weight > 0, but the
    mixture is nearly one-hot: few are above the threshold."""
    from switchbert.analysis.flops import active_path_counts
    from switchbert.layers.switcher import gumbel_softmax_weights

    g = torch.Generator().manual_seed(0)
    log_p = torch.full((4000, 1, 4), -torch.log(torch.tensor(4.0)))
    w = gumbel_softmax_weights(log_p, 0.1, None, False, generator=g)[:, 0]
    route = (LayerRoute(MODES, w, w, w.argmax(-1)),)
    assert active_path_counts(route, 0.0)[0][0] > 3.9
    assert active_path_counts(route)[0][0] < 1.5
    # At a high temperature (the start of training) the mixture is spread: nearly every mode is active.
    w5 = gumbel_softmax_weights(log_p, 5.0, None, False, generator=g)[:, 0]
    assert active_path_counts((LayerRoute(MODES, w5, w5, w5.argmax(-1)),))[0][0] > 3.9


def test_flops_over_training_on_a_schedule_with_a_known_answer():
    """Steps 1..29 mix all four modes evenly, steps 30..100 put 99.7% on J. Logged like the trainer (step 1
    and every 10 steps), the run costs 29 steps of four attentions and 71 of one, exactly."""
    from switchbert.analysis.flops import flops_from_training_log, single_stream_flops, training_flops_log

    B, T, R = 4, 6, 5
    text_mask = torch.ones(B, T, dtype=torch.bool)
    region_mask = torch.ones(B, R, dtype=torch.bool)
    records = []
    for step in [1] + list(range(10, 101, 10)):
        w = [0.25] * 4 if step < 30 else [0.001, 0.001, 0.001, 0.997]
        routes = (_soft_layer(w, B),) * 3
        records.append({"split": "train", "step": step, **training_flops_log(TINY, routes, text_mask, region_mask)})
    run = flops_from_training_log(records, global_batch=B, total_steps=100)

    every = single_stream_flops(TINY, T, R, [sum(attention_pairs(m, T, R) for m in MODES)] * 3).total
    joint = single_stream_flops(TINY, T, R, [attention_pairs("J", T, R)] * 3).total
    uniter = fixed_flops(default_baselines(TINY)["UNITER"], T, R).total
    assert run.steps == 100
    assert run.totals["paper"] == B * (29 * every + 71 * joint)
    assert run.totals["fused"] == B * 100 * joint  # the fused kernel: one joint attention whatever the mixture
    assert run.totals["uniter"] == B * 100 * uniter
    assert [s[4] for s in run.series] == [4.0, 4.0, 4.0] + [1.0] * 8  # the count over training
    assert records[0]["flops/active_sab/L2"] == 4.0 and records[-1]["flops/active_sab/L2"] == 1.0
    assert run.relative("paper") > run.relative("fused")
    assert "active when its weight is above 0.01" in run.to_markdown()
    # With "any weight > 0" the count never falls: the defect this threshold removes.
    zero = [{"split": "train", "step": r["step"],
             **training_flops_log(TINY, (_soft_layer([0.25] * 4 if r["step"] < 30 else [0.001, 0.001, 0.001, 0.997],
                                                     B),) * 3, text_mask, region_mask, min_weight=0.0)}
            for r in records]
    assert flops_from_training_log(zero, B, 100).totals["paper"] == B * 100 * every


# -- baselines read from the presets -----------------------------------------------------------------------


@pytest.mark.parametrize("size", ["tiny", "mini", "small", "base"])
def test_default_baselines_are_the_presets_of_the_models_size(size):
    """Each baseline costs what its ``<family>-<size>`` preset costs (layer counts from the preset, not a
    description in analysis/flops); UNITER has the switching model's depth."""
    from switchbert.analysis.flops import preset_size

    config = switchbert.get_config(f"switchbert-{size}")
    assert preset_size(config) == size
    base = default_baselines(config)
    assert list(base) == ["UNITER", "LXMERT", "ViLBERT"]
    for name, family in (("UNITER", "uniter"), ("LXMERT", "lxmert"), ("ViLBERT", "vilbert")):
        preset = switchbert.get_config(f"{family}-{size}")
        assert base[name].arch == preset.arch and base[name].embedding == preset.embedding
        assert fixed_flops(base[name], 38, 37) == fixed_flops(preset, 38, 37)
    assert base["UNITER"].num_layers == config.num_layers and base["UNITER"].sib is None
    six = default_baselines(switchbert.get_config("switchbert-base-6l"))["UNITER"]
    assert fixed_flops(six, 38, 37) == fixed_flops(switchbert.get_config("uniter-base-6l"), 38, 37)


def test_default_baselines_of_an_unknown_width_take_the_base_layout_at_that_width():
    from switchbert.analysis.flops import preset_size

    config = switchbert.get_config("switchbert-tiny", hidden_size=48, num_heads=4)
    assert preset_size(config) is None
    base = default_baselines(config)
    lx = base["LXMERT"]
    assert (lx.text_layers, lx.region_layers, lx.cross_layers) == (9, 5, 5)
    assert (base["ViLBERT"].text_layers, base["ViLBERT"].cross_layers) == (6, 6)
    assert all(c.hidden_size == 48 and c.intermediate_size == 64 for c in base.values())
