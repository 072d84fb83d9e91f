"""torch.compile readiness: the training and inference forward passes trace into one graph.

A graph break (a host sync such as ``bool(tensor)``, a data-dependent shape, an ``out=`` into a
slice) splits the compiled step and costs GPU time; this catches one where it is introduced. Only
Dynamo's tracing runs here (``torch._dynamo.explain``), not the slow Inductor compile.
"""

from __future__ import annotations

import pytest
import torch

import switchbert
from switchbert.synthetic import random_batch


@pytest.mark.parametrize(
    "preset,train,impl",
    [("switchbert-tiny", True, "fused"), ("switchbert-tiny", True, "sdpa"), ("switchbert-tiny", False, "fused"),
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
