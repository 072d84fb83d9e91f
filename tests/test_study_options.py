"""Options added by the study of why Switch-BERT trails its UNITER (docs/study_causes_results.md):
``model.switch_init`` / ``switch_init_logit`` and ``train.switch_lr_scale``. Their defaults keep the
paper's reading: uniform switchers, one learning rate."""

from __future__ import annotations

import math

import pytest
import torch

import switchbert
from switchbert.config import ModelConfig
from switchbert.layers.switcher import Switcher
from switchbert.train.config import TrainSection
from switchbert.train.optim import build_optimizer, build_scheduler, param_groups


def test_defaults_are_the_papers_reading():
    c = ModelConfig()
    assert c.switch_init == "uniform"
    assert TrainSection().switch_lr_scale == 1.0


def test_identity_init_starts_every_switcher_at_j_and_out():
    torch.manual_seed(0)
    m = switchbert.create_model("switchbert-tiny", switch_init="identity")
    b = m.config.switch_init_logit
    for s in m.sab_switchers:
        assert s.identity_option == m.config.sab_modes.index("J")
        assert s.mlp[-1].bias[s.identity_option] == b
    for s in m.sib_switchers:
        assert s.identity_option == 0 and m.config.sib_candidates[0] == "out"
        assert (s.mlp[-1].bias.view(2, -1)[:, 0] == b).all()
    uniform = switchbert.create_model("switchbert-tiny")
    assert all((s.mlp[-1].bias == 0).all() for s in uniform.switchers())


def test_identity_init_with_j_absent_or_a_subset_of_modes():
    m = switchbert.create_model("switchbert-tiny", switch_init="identity", sab_modes=["SS", "J"])
    assert all(s.identity_option == 1 for s in m.sab_switchers)
    m = switchbert.create_model("switchbert-tiny", switch_init="identity", sab_modes=["SS", "SC"])
    assert all(s.identity_option == 0 for s in m.sab_switchers)


@pytest.mark.parametrize("field,value", [("switch_init", "J"), ("switch_init_logit", -1.0),
                                         ("switch_init_logit", math.inf)])
def test_invalid_switch_init_is_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: value})


def test_switch_lr_scale_one_keeps_the_two_groups():
    m = switchbert.create_model("switchbert-tiny")
    groups = build_optimizer([m], 1e-3, 0.01, (0.9, 0.999), 1e-6).param_groups
    assert len(groups) == 2
    assert [len(g["params"]) for g in groups] == [len(g["params"]) for g in param_groups([m], 0.01)]


def test_switch_lr_scale_puts_switchers_in_their_own_groups():
    m = switchbert.create_model("switchbert-tiny")
    opt = build_optimizer([m], 1e-3, 0.01, (0.9, 0.999), 1e-6, switch_lr_scale=10.0)
    assert len(opt.param_groups) == 4
    switch_ids = {id(p) for s in m.modules() if isinstance(s, Switcher) for p in s.parameters()}
    main = {id(p) for g in opt.param_groups[:2] for p in g["params"]}
    extra = {id(p) for g in opt.param_groups[2:] for p in g["params"]}
    assert extra == switch_ids and not main & switch_ids
    assert len(main) + len(extra) == sum(1 for _ in m.parameters())
    assert opt.param_groups[0]["lr"] == 1e-3
    assert [g["weight_decay"] for g in opt.param_groups[2:]] == [0.01, 0.0]
    sched = build_scheduler(opt, total_steps=10, warmup_fraction=0.0)
    opt.step()
    sched.step()  # the schedule scales each group's own rate
    assert opt.param_groups[2]["lr"] == pytest.approx(10 * opt.param_groups[0]["lr"])


def test_switch_lr_scale_is_validated():
    from switchbert.train.config import ConfigError, from_dict

    cfg = {"task": "vqa", "output_dir": "/tmp/x", "model": {"preset": "switchbert-tiny"},
           "data": {"root": "/tmp"}, "train": {"switch_lr_scale": 0.0}}
    with pytest.raises(ConfigError, match="switch_lr_scale"):
        from_dict(cfg, source="t")


def test_switch_noise_zero_trains_on_the_noise_free_mixture():
    torch.manual_seed(1)
    m = switchbert.create_model("switchbert-tiny", switch_noise=0.0)
    assert all(s.noise_scale == 0.0 for s in m.switchers())
    s = m.sab_switchers[0]
    torch.nn.init.normal_(s.mlp[-1].weight, std=1.0)
    s.tau.fill_(0.7)
    g = torch.randn(8, s.mlp[0].in_features)
    d = s(g, g.flip(0), hard=False)
    torch.testing.assert_close(d.weights, torch.softmax(d.probs.log() / 0.7, -1))
    assert switchbert.create_model("switchbert-tiny").switchers()[0].noise_scale == 1.0


def test_switch_noise_one_draws_exactly_as_before():
    from switchbert.layers.switcher import gumbel_softmax_weights

    log_p = torch.log_softmax(torch.randn(16, 1, 4), -1)
    a = gumbel_softmax_weights(log_p, 0.5, None, False, generator=torch.Generator().manual_seed(3))
    b = gumbel_softmax_weights(log_p, 0.5, None, False, generator=torch.Generator().manual_seed(3), noise_scale=1.0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="switch_noise"):
        ModelConfig(switch_noise=-0.5)
