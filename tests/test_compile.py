"""torch.compile readiness: the training and inference forward passes trace into one graph.

A graph break (a host sync such as ``bool(tensor)``, a data-dependent shape, an ``out=`` into a
slice) splits the compiled step and costs GPU time; this catches one where it is introduced. Only
Dynamo's tracing runs here (``torch._dynamo.explain``), not the slow Inductor compile.
"""

from __future__ import annotations

import pytest
import torch

import switchbert
from switchbert.data.random_batch import random_batch


@pytest.mark.parametrize(
    "preset,train,impl",
    [("switchbert-tiny", True, "fused"), ("switchbert-tiny", True, "sdpa"), ("switchbert-tiny", True, "flex"),
     ("switchbert-tiny", False, "fused"),
     ("uniter-tiny", True, "fused")],
)
def test_forward_traces_without_graph_breaks(preset, train, impl):
    torch._dynamo.reset()
    model = switchbert.create_model(preset, attention_impl=impl).train(train)
    model.set_temperature(0.7)
    batch = random_batch(model.config, 3, num_text=7, num_regions=5, padded=True)
    explanation = torch._dynamo.explain(model)(batch, validate=False)
    reasons = [r.reason.splitlines()[0] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


def test_pretraining_step_traces_without_graph_breaks():
    # The whole step the trainer compiles with ``train.compile``: encoder, MLM/MRC/ITM heads, loss.
    # MLM/MRC targets are gathered at the collate's flat indices, so no nonzero() breaks the graph.
    from types import SimpleNamespace

    from switchbert.data.pretrain import PretrainLabels
    from switchbert.heads.pretrain import PretrainHeads, flat_index
    from switchbert.train.distributed import DistContext
    from switchbert.train.tasks import PretrainTask

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny").train()
    c = model.config
    heads = PretrainHeads(model.get_word_embeddings(), c.region_hidden_size_, c.pooler_size, num_region_classes=5)
    B, T, R = 3, 7, 5
    batch = random_batch(c, B, num_text=T, num_regions=R, padded=True)
    mlm_labels = torch.full((B, T), -100)
    mlm_labels[:, 2] = 7
    mrc_mask = torch.zeros(B, R, dtype=torch.bool)
    mrc_mask[:, 1] = True
    itm = torch.tensor([1, 0, 1])
    mlm_labels[itm == 0], mrc_mask[itm == 0] = -100, False  # as the collate does for mismatched pairs
    labels = PretrainLabels(mlm_labels=mlm_labels, mrc_targets=torch.softmax(torch.randn(B, R, 5), -1),
                            mrc_mask=mrc_mask, itm_labels=itm,
                            mlm_index=flat_index(mlm_labels != -100), mrc_index=flat_index(mrc_mask))
    task = PretrainTask.__new__(PretrainTask)  # only the step's config is needed
    task.config = SimpleNamespace(train=SimpleNamespace(loss_weights=(1.0, 1.0, 1.0)))
    task.ctx = DistContext()  # one process: the global token count is the batch's own, no collective

    def step(batch, labels):
        return task.step(model, heads, batch, labels).loss

    explanation = torch._dynamo.explain(step)(batch, labels)
    reasons = [r.reason.splitlines()[0] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons


def test_eager_switchbert_step_launches_at_most_twice_uniters_ops():
    # On a GPU in eager mode every op is a kernel launch (docs/performance.md, "Ops per eager training
    # step"). The tiny step was 2.51x UNITER's ops before the session that removed the avoidable ones
    # (zero-filled slice gradients, where/logsumexp constants, rebuilt probabilities), 1.94x after.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from count_ops import step_ops

    switch = sum(step_ops("switchbert-tiny", 2, {"attention_impl": "fused"}).values())
    uniter = sum(step_ops("uniter-tiny", 2, {}).values())
    assert switch <= 2.1 * uniter, (switch, uniter)
