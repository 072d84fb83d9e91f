"""One Gumbel draw per retrieval candidate group (``Batch.noise_group``, ``train.retrieval_shared_noise``).

Measured on the default demo's data and model (switchbert-mini, dropout 0, batch 16, tau 5 -> 0.1,
docs/training.md "Learning rates for small models"): with independent noise per pair the 4-way loss
of Switch-BERT was still 1.389 after 150 steps (batch 32); with a shared draw it left ln 4 and
reached 0.82 by step 400. These tests keep the mechanism: rows of one group are routed alike.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from switchbert.batch import Batch
from switchbert.layers.switcher import gumbel_softmax_weights
from tests.helpers import batch_for, tiny_model


def test_rows_of_one_group_get_the_same_noise_and_groups_differ():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.zeros(8, 1, 4), dim=-1)  # equal p: the weights are the noise alone
    group = torch.tensor([0, 0, 0, 0, 4, 4, 4, 4])
    w = gumbel_softmax_weights(log_probs, 0.5, None, False, noise_group=group)
    assert torch.equal(w[0], w[3]) and torch.equal(w[4], w[7])
    assert not torch.allclose(w[0], w[4])
    independent = gumbel_softmax_weights(log_probs, 0.5, None, False)
    assert not torch.allclose(independent[0], independent[1])


def test_shared_noise_keeps_the_probabilities_of_each_row():
    # Sharing the draw changes nothing about each row's own distribution: over many groups the
    # argmax frequencies still follow p.
    torch.manual_seed(1)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    n = 40000
    log_probs = p.log().expand(n, 1, 4).contiguous()
    group = torch.arange(n) // 2 * 2
    w = gumbel_softmax_weights(log_probs, 1.0, None, False, noise_group=group)
    freq = torch.bincount(w.argmax(-1).flatten(), minlength=4).double() / n
    assert torch.allclose(freq, p.double(), atol=0.015)


def test_the_model_routes_a_group_alike_in_training_and_ignores_groups_at_inference():
    model = tiny_model()
    model.train()
    b = batch_for(model, batch_size=1, padded=False)
    four = Batch(**{f.name: (getattr(b, f.name).expand(4, *getattr(b, f.name).shape[1:]).clone()
                             if getattr(b, f.name) is not None else None) for f in dataclasses.fields(b)})
    torch.manual_seed(0)
    shared = model(dataclasses.replace(four, noise_group=torch.zeros(4, dtype=torch.long)))
    for route in shared.routes:
        assert torch.allclose(route.sab_weights, route.sab_weights[:1].expand_as(route.sab_weights))
    torch.manual_seed(0)
    own = model(four)
    assert any(not torch.allclose(r.sab_weights, r.sab_weights[:1].expand_as(r.sab_weights)) for r in own.routes)
    model.eval()
    with torch.no_grad():
        a = model(dataclasses.replace(four, noise_group=torch.zeros(4, dtype=torch.long))).pooled
        c = model(four).pooled
    assert torch.equal(a, c)


def test_the_retrieval_step_shares_the_draw_within_each_caption_s_candidates(monkeypatch):
    from switchbert.train.tasks import RetrievalTask

    seen = {}

    class Model(torch.nn.Module):
        def forward(self, batch, validate=True):
            seen["group"] = batch.noise_group
            raise StopIteration  # enough: we only look at the batch the model got

    task = RetrievalTask.__new__(RetrievalTask)
    b = batch_for(tiny_model(), batch_size=8)
    labels = type("L", (), {"num_candidates": 4})()
    for shared, expect in ((True, torch.tensor([0, 0, 0, 0, 4, 4, 4, 4])), (False, None)):
        task.config = type("C", (), {"train": type("T", (), {"retrieval_shared_noise": shared})()})()
        with pytest.raises(StopIteration):
            task.step(Model(), None, b, labels)
        assert (seen["group"] is None) if expect is None else torch.equal(seen["group"], expect)


def test_noise_group_is_checked_and_renumbered_by_select():
    b = batch_for(tiny_model(), batch_size=4)
    with pytest.raises(ValueError, match="noise_group"):
        dataclasses.replace(b, noise_group=torch.zeros(3, dtype=torch.long)).validate()
    with pytest.raises(ValueError, match=r"noise_group: ids must lie in \[0, 4\)"):
        dataclasses.replace(b, noise_group=torch.tensor([0, 0, 4, 4])).validate()
    grouped = dataclasses.replace(b, noise_group=torch.tensor([0, 0, 2, 2]))
    grouped.validate()
    sub = grouped.select(torch.tensor([2, 3]))
    assert sub.noise_group.tolist() == [0, 0]
    sub.validate()
