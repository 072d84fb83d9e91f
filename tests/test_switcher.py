"""The switcher: Gumbel-softmax numerics, top-K, straight-through, alignment, temperature schedules."""

from __future__ import annotations

import math

import pytest
import torch

from switchbert.layers.switcher import (Switcher, alignment_degree, gumbel_softmax_weights, pool_modalities,
                                       pooling_weights)
from switchbert.temperature import TemperatureSchedule, temperature_at


def test_gumbel_under_bf16_autocast_at_low_temperature_is_finite():
    torch.manual_seed(0)
    s = Switcher(32, 4)
    torch.nn.init.normal_(s.mlp[-1].weight, std=3.0)  # peaked logits make tiny probabilities
    s.tau.fill_(0.1)
    g = torch.randn(4096, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = s(g, g.flip(0), hard=False)
    assert d.weights.dtype == torch.float32
    assert torch.isfinite(d.weights).all() and torch.isfinite(d.probs).all()
    torch.testing.assert_close(d.weights.sum(-1), torch.ones(4096, 1))


def test_gumbel_sampling_matches_probabilities():
    # At tau -> 0 the argmax of Gumbel-perturbed log p is a sample from p (the Gumbel-max trick).
    torch.manual_seed(1)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    log_p = p.log().expand(200_000, 4)
    w = gumbel_softmax_weights(log_p, 0.01, None, False)
    freq = torch.bincount(w.argmax(-1), minlength=4).float() / w.shape[0]
    torch.testing.assert_close(freq, p, atol=5e-3, rtol=0)


def test_top_k_keeps_the_largest_and_renormalises():
    torch.manual_seed(2)
    log_p = torch.log_softmax(torch.randn(64, 4), -1)
    torch.manual_seed(3)
    soft = gumbel_softmax_weights(log_p, 1.0, None, False)
    torch.manual_seed(3)
    top2 = gumbel_softmax_weights(log_p, 1.0, 2, False)
    keep = soft >= soft.topk(2, -1).values[:, -1:]
    torch.testing.assert_close(top2, soft * keep / (soft * keep).sum(-1, keepdim=True))
    assert ((top2 > 0).sum(-1) == 2).all()


@pytest.mark.parametrize("top_k,st", [(1, False), (None, True)])
def test_straight_through_is_one_hot_forward_with_soft_gradient(top_k, st):
    logits = torch.randn(16, 4, requires_grad=True)
    w = gumbel_softmax_weights(torch.log_softmax(logits, -1), 1.0, top_k, st)
    assert torch.equal(w.detach(), torch.nn.functional.one_hot(w.detach().argmax(-1), 4).float())
    (w * torch.arange(4.0)).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_hard_mode_is_argmax_of_p_without_noise():
    torch.manual_seed(4)
    s = Switcher(8, 3, num_groups=2)
    torch.nn.init.normal_(s.mlp[-1].weight, std=1.0)
    g_t, g_r = torch.randn(10, 8), torch.randn(10, 8)
    d1, d2 = s(g_t, g_r, hard=True), s(g_t, g_r, hard=True)
    assert torch.equal(d1.choice, d2.choice)
    assert d1.weights.shape == (10, 2, 3)
    assert torch.equal(d1.choice, d1.probs.argmax(-1))


def test_alignment_degrees():
    g_t, g_r = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 4.0]])
    assert alignment_degree(g_t, g_r, "hadamard").tolist() == [[3.0, -8.0]]
    assert alignment_degree(g_t, g_r, "concat").tolist() == [[1.0, -2.0, 3.0, 4.0]]
    assert alignment_degree(g_t, g_r, "rich").tolist() == [[1.0, -2.0, 3.0, 4.0, 3.0, -8.0, 2.0, 6.0]]


def test_pooling_averages_each_modality_ignoring_padding_and_empty():
    # Sequence of 2 text + 3 region positions; hand-computed means.
    x = torch.tensor([[[1.0], [3.0], [10.0], [20.0], [100.0]],
                      [[5.0], [7.0], [9.0], [11.0], [13.0]]])
    valid = torch.tensor([[True, True, True, True, False],  # padded last region
                          [True, False, False, False, False]])  # text only: no region position
    g_t, g_r = pool_modalities(x, pooling_weights(valid, 2))
    assert g_t.tolist() == [[2.0], [5.0]]
    assert g_r.tolist() == [[15.0], [0.0]]


def test_temperature_schedules():
    assert temperature_at(0, 101) == pytest.approx(5.0)
    assert temperature_at(100, 101) == pytest.approx(0.1)
    assert temperature_at(50, 101) == pytest.approx(math.sqrt(5.0 * 0.1))  # geometric midpoint
    assert temperature_at(50, 101, kind="linear") == pytest.approx(2.55)
    assert temperature_at(10_000, 101) == pytest.approx(0.1)  # clamped after the stage
    sched = TemperatureSchedule(total_steps=10, tau_max=2.0, tau_min=0.5)
    values = [sched(s) for s in range(10)]
    assert values == sorted(values, reverse=True) and values[0] == 2.0 and values[-1] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        TemperatureSchedule(total_steps=10, tau_max=0.1, tau_min=1.0)


@pytest.mark.parametrize("top_k,sib_top_k", [(1, None), (2, None), (None, 1), (2, 2)])
def test_top_k_of_the_sab_and_of_the_sib_are_separate_settings(top_k, sib_top_k):
    """The paper's top-K is about SAB paths: ``top_k`` leaves the Switch-Input Block mixing every candidate
    unless ``sib_top_k`` says otherwise."""
    from switchbert import create_model
    from tests.helpers import batch_for, tiny_model

    model = tiny_model(top_k=top_k, sib_top_k=sib_top_k).train()
    out = model(batch_for(model))
    for r in out.routes:
        sab_active = (r.sab_weights != 0).sum(-1)  # (B,)
        assert (sab_active == (top_k or 4)).all()
        if r.sib_weights is not None:
            sib_active = (r.sib_weights != 0).sum(-1)  # (B, 2)
            assert (sib_active == (sib_top_k or r.sib_weights.shape[-1])).all()
    assert model.sib_switchers[0].top_k == (None if sib_top_k in (None, 3) else sib_top_k)
    with pytest.raises(ValueError, match="sib_top_k"):
        create_model("switchbert-tiny", sib_top_k=0)


def test_identity_logit_starts_at_the_identity_option():
    # switch_init="identity" [ours]: bias b on the identity option gives p = e^b / (e^b + K - 1) for any input.
    torch.manual_seed(3)
    s = Switcher(16, 4, 1, identity_option=3, identity_logit=4.0)
    s.reset_output_layer()
    g = torch.randn(32, 16)
    p = s(g, g.roll(1, 0), hard=True).probs
    expected = math.exp(4.0) / (math.exp(4.0) + 3)
    torch.testing.assert_close(p[..., 3], torch.full((32, 1), expected), atol=5e-3, rtol=0)
    sib = Switcher(16, 3, 2, identity_option=0, identity_logit=4.0)
    sib.reset_output_layer()
    assert (sib(g, g, hard=True).choice == 0).all()  # both groups (text, regions) start at `out`


def test_uniform_init_is_unchanged_by_the_new_arguments():
    torch.manual_seed(4)
    s = Switcher(16, 4, 1)
    s.reset_output_layer()
    assert s.identity_logit == 0.0 and (s.mlp[-1].bias == 0).all()
    with pytest.raises(ValueError):
        Switcher(16, 4, 1, identity_option=4)


def test_overrides_give_soft_hard_and_identity_weights():
    torch.manual_seed(5)
    s = Switcher(16, 4, 1, identity_option=3)
    torch.nn.init.normal_(s.mlp[-1].weight, std=1.0)
    s.tau.fill_(0.5)
    g = torch.randn(8, 16)
    normal = s(g, g, hard=True)
    s.override = "soft"
    soft = s(g, g, hard=False)
    torch.testing.assert_close(soft.weights, torch.softmax(normal.probs.log() / 0.5, -1))
    s.override = "hard"
    torch.testing.assert_close(s(g, g, hard=False).weights, normal.weights)  # no Gumbel noise, even in training
    s.override = "identity"
    ident = s(g, g, hard=False)
    assert (ident.choice == 3).all() and (ident.weights.sum(-1) == 1).all()
    torch.testing.assert_close(ident.probs, normal.probs)  # p itself is still reported
    s.override = "bogus"
    with pytest.raises(ValueError):
        s(g, g, hard=True)
