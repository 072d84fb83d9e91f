"""The NaN guard: a non-finite gradient norm never reaches a checkpoint; non-finite weights are named."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from switchbert.cli import main
from tests.test_train_support import QUIET, ckpt_step, synth_config
from tests.test_train_support import synth  # noqa: F401 (fixtures)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -------------------------------------------------------------------------------- the NaN guard
class _InfGrad(torch.autograd.Function):
    """Identity forward (the loss stays finite), inf gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("inf")


def test_an_inf_gradient_without_clipping_never_reaches_a_checkpoint(synth, tmp_path, monkeypatch, capsys):
    from switchbert.train import tasks

    original = tasks.VQATask.step
    calls = {"n": 0}

    def poisoned(self, model, heads, batch, labels):
        out = original(self, model, heads, batch, labels)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = _InfGrad.apply(out.loss)
        return out

    monkeypatch.setattr(tasks.VQATask, "step", poisoned)
    out = tmp_path / "run"
    rc = main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
               "train.batch_size=8", "train.checkpoint_every=1", "train.clip=null", "train.log_every=50", *QUIET])
    assert rc == 2
    err = capsys.readouterr().err
    assert "gradient norm is" in err and "at optimizer step 3" in err
    assert f"last good checkpoint is {out / 'last'} (step 2)" in err
    assert ckpt_step(out) == 2
    for name in ("model.safetensors", "heads.safetensors"):
        assert all(torch.isfinite(v).all() for v in load_file(str(out / "last" / name)).values()), name


def test_nonfinite_weights_or_optimizer_state_are_named():
    from torch import nn

    from switchbert.train.trainer import nonfinite_tensors

    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    assert nonfinite_tensors(model=model, optimizer=opt) == []
    with torch.no_grad():
        model[1].bias.fill_(float("nan"))
    opt.state[model[0].weight]["exp_avg_sq"][0, 0] = float("inf")
    assert nonfinite_tensors(model=model, optimizer=opt) == ["model.1.bias", "optimizer.state[param 0].exp_avg_sq"]
