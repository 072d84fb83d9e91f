"""The pieces of the training loop: parameter groups, the LR schedule, the sampler, the NaN guard,
atomic checkpoints, one training step of every tiny preset on every objective, the console lines, and
the order in which ``Trainer._fit`` runs its named parts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from switchbert.cli import main
from switchbert import create_model
from switchbert.presets import PRESETS
from switchbert.train.checkpoint import resolve_checkpoint, write_dir_atomically
from switchbert.train.config import load_config
from switchbert.train.distributed import DistContext, ShardedSampler
from switchbert.train.optim import adamw_kwargs, build_optimizer, build_scheduler, param_groups, warmup_linear
from switchbert.train.tasks import build_task
from switchbert.train.trainer import NonFiniteLossError, Trainer, _TrainModule
from tests.test_train_support import QUIET, make_synth, read_jsonl, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def test_param_groups_exempt_biases_and_layernorm_and_count_tied_weights_once():
    from switchbert.heads import PretrainHeads

    model = create_model("switchbert-tiny")
    heads = PretrainHeads(model.get_word_embeddings(), 32, 48, num_region_classes=32)
    decay, no_decay = param_groups([model, heads], 0.01)
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    expected = {id(p) for p in list(model.parameters()) + list(heads.parameters())}
    assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected  # the tied matrix once
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for m in (model, heads) for n, p in m.named_parameters()}
    for p in no_decay["params"]:
        assert names[id(p)].endswith("bias") or "norm" in names[id(p)], names[id(p)]
    for p in decay["params"]:
        assert names[id(p)].endswith("weight") and "norm" not in names[id(p)], names[id(p)]
    assert any(p is model.get_word_embeddings().weight for p in decay["params"])


def test_warmup_then_linear_decay():
    # 10 steps, 2 of warm-up: 1/2, 1, then 1 - k/8 down to 0.
    assert [warmup_linear(s, 10, 2) for s in range(11)] == pytest.approx(
        [0.5, 1.0, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0, 0.0, 0.0][:2] + [1 - (s - 2) / 8 for s in range(2, 11)])
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, total_steps=10, warmup_fraction=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.0375, 0.025, 0.0125])


def test_sharded_sampler_splits_each_global_batch_between_ranks():
    indices = list(range(100, 123))  # 23 items, global batch 6: 3 steps, 5 items dropped
    one = list(ShardedSampler(indices, 6, seed=1, epoch=4))
    assert len(one) == 18 and len(set(one)) == 18 and set(one) <= set(indices)
    ranks = [list(ShardedSampler(indices, 6, seed=1, epoch=4, rank=r, world_size=2)) for r in range(2)]
    for step in range(3):  # micro-batches of 3 per rank together form the single process's batch
        assert sorted(ranks[0][3 * step:3 * step + 3] + ranks[1][3 * step:3 * step + 3]) == sorted(one[6 * step:6 * step + 6])
    assert list(ShardedSampler(indices, 6, seed=1, epoch=4, skip=12)) == one[12:]  # resume mid-epoch
    assert one != list(ShardedSampler(indices, 6, seed=1, epoch=5))  # a new order each epoch
    assert list(ShardedSampler(indices, 6, seed=1, epoch=4, shuffle=False)) == indices[:18]


def test_atomic_directory_write_keeps_the_old_copy_on_failure(tmp_path):
    target = tmp_path / "last"
    write_dir_atomically(target, lambda d: (d / "config.json").write_text("1"))

    def crash(d: Path) -> None:
        (d / "config.json").write_text("2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_dir_atomically(target, crash)
    assert (target / "config.json").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["last"]  # no temporary left behind
    write_dir_atomically(target, lambda d: (d / "config.json").write_text("3"))
    assert (target / "config.json").read_text() == "3"
    # A crash between the two renames leaves .old-last; it is still found.
    target.rename(tmp_path / ".old-last")
    assert resolve_checkpoint(tmp_path) == tmp_path / ".old-last"


def test_nan_loss_stops_with_step_and_last_good_checkpoint(synth, tmp_path, monkeypatch, capsys):
    from switchbert.train import tasks

    original = tasks.VQATask.step
    calls = {"n": 0}

    def poisoned(self, model, heads, batch, labels):
        out = original(self, model, heads, batch, labels)
        calls["n"] += 1
        if calls["n"] == 3:  # the third optimizer step
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(tasks.VQATask, "step", poisoned)
    out = tmp_path / "run"
    rc = main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
               "train.batch_size=8", "train.checkpoint_every=1", *QUIET])
    assert rc == 2
    err = capsys.readouterr().err
    assert "loss is nan at optimizer step 3" in err
    assert f"last good checkpoint is {out / 'last'} (step 2)" in err
    state = torch.load(out / "last" / "trainer_state.pt", weights_only=True)["state"]
    assert state["step"] == 2  # the NaN step was not taken
    config = load_config(synth_config("vqa"), [f"data.root={synth}", f"output_dir={tmp_path / 'r2'}",
                                               "model.init_from=null", *QUIET])
    calls["n"] = 2
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written yet"):
        Trainer(config).fit()


def test_nan_loss_is_noticed_at_most_log_every_steps_late(synth, tmp_path, monkeypatch):
    """The NaN record lives on the device and is read on log steps, before checkpoints and at the end of
    an epoch or stage. A NaN at step 2 is noticed at the next log step (log_every=4: step 4) or at the
    end of the stage (max_steps=3), named as step 2, and no checkpoint is written after it."""
    from switchbert.train import tasks

    original = tasks.VQATask.step
    calls = {"n": 0}

    def poisoned(self, model, heads, batch, labels):
        out = original(self, model, heads, batch, labels)
        calls["n"] += 1
        if calls["n"] == 2:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(tasks.VQATask, "step", poisoned)
    for run, extra, noticed in (("log", ["train.log_every=4"], 4),
                                ("stage_end", ["train.log_every=50", "train.max_steps=3"], 3)):
        calls["n"] = 0
        out = tmp_path / run
        config = load_config(synth_config("vqa"), [f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
                                                   "train.batch_size=8", *extra, *QUIET])
        with pytest.raises(NonFiniteLossError) as err:
            Trainer(config).fit()
        message = str(err.value)
        assert "loss is nan at optimizer step 2 (epoch 1, step 2 of the epoch)" in message, run
        assert f"noticed at step {noticed}" in message and "no checkpoint was written yet" in message, run
        assert calls["n"] == noticed and not (out / "last").exists(), run
        train_steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["split"] == "train"]
        assert train_steps == [1], run  # step 1 is always logged; nothing at or after the NaN


def test_training_validates_batches_on_the_host_not_in_the_step(synth, tmp_path, monkeypatch):
    """The tasks' steps run the model with validate=False (Batch.validate on device tensors syncs);
    the trainer validates each micro-batch before the copy, so bad input still stops with the same
    message, now before any forward pass."""
    from switchbert.batch import Batch
    from switchbert.data import VQADataset
    from switchbert.train import tasks

    real_validate = Batch.validate

    def refuse(self, *args, **kwargs):
        raise AssertionError("a training step validated its batch")

    for task_name in ("pretrain", "vqa", "retrieval", "refexp"):
        config = load_config(synth_config(task_name), [f"data.root={synth}", "model.init_from=null",
                                                       f"output_dir={tmp_path}"])
        model = create_model("uniter-tiny")
        task = build_task(config, model.config, DistContext())
        heads = task.build_heads(model)
        data = task.train_dataset()
        batch, labels = data.collate([data[i] for i in range(4)])
        monkeypatch.setattr(Batch, "validate", refuse)
        task.step(model, heads, batch, labels)
        monkeypatch.setattr(Batch, "validate", real_validate)

    real_collate = VQADataset.collate

    def no_text(self, examples):
        batch, labels = real_collate(self, examples)
        batch.text_mask[1] = False
        return batch, labels

    steps = {"n": 0}
    real_step = tasks.VQATask.step

    def counted(self, *args):
        steps["n"] += 1
        return real_step(self, *args)

    monkeypatch.setattr(VQADataset, "collate", no_text)
    monkeypatch.setattr(tasks.VQATask, "step", counted)
    config = load_config(synth_config("vqa"), [f"data.root={synth}", f"output_dir={tmp_path / 'bad'}",
                                               "model.init_from=null", "train.batch_size=8", *QUIET])
    with pytest.raises(ValueError, match=r"Batch.text_mask: samples \[1\] have no real text token"):
        Trainer(config).fit()
    assert steps["n"] == 0


class _FakeCompiled(nn.Module):
    """Stands in for torch.compile's wrapper: the module under ``_orig_mod`` (so a state_dict taken from
    it would carry the prefix), calls counted."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._orig_mod = module
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self._orig_mod(*args, **kwargs)


def test_compile_option_wraps_the_step_and_checkpoints_keep_clean_keys(synth, tmp_path, monkeypatch):
    # torch.compile itself is not run here: on this 2-core CPU two compiled steps of a tiny preset
    # took about 170 s, too slow for the suite. A stand-in records what the trainer compiles and
    # checks that the steps go through it; a real compile is for the GPU check.
    from safetensors.torch import load_file

    from switchbert.weights.pretrained import load_pretrained

    compiled: list[_FakeCompiled] = []

    def fake_compile(module, **kwargs):
        compiled.append(_FakeCompiled(module))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    out = tmp_path / "run"
    config = load_config(synth_config("pretrain"), [f"data.root={synth}", f"output_dir={out}", "train.batch_size=8",
                                                    "train.max_steps=2", "train.compile=true", *QUIET])
    Trainer(config).fit()
    assert len(compiled) == 1 and isinstance(compiled[0]._orig_mod, _TrainModule)
    assert compiled[0].calls == 2  # every training micro-batch went through the compiled module
    assert any(k.startswith("_orig_mod.") for k in compiled[0].state_dict())  # as torch.compile's wrapper
    for name in ("model", "heads"):
        keys = list(load_file(str(out / "last" / f"{name}.safetensors")))
        assert keys and not any("_orig_mod" in k for k in keys), name
    load_pretrained(out / "last")  # strict load into a fresh model
    config = load_config(synth_config("pretrain"), [f"data.root={synth}", f"output_dir={tmp_path / 'eager'}",
                                                    "train.batch_size=8", "train.max_steps=1", *QUIET])
    Trainer(config).fit()
    assert len(compiled) == 1  # compile: false (the default) never compiles


def test_adamw_is_fused_only_when_every_parameter_is_a_cuda_float():
    from types import SimpleNamespace

    def param(device: str, dtype: torch.dtype = torch.float32):  # adamw_kwargs reads device and dtype only
        return SimpleNamespace(device=torch.device(device), dtype=dtype)

    assert adamw_kwargs([param("cuda"), param("cuda", torch.bfloat16)]) == {"fused": True}
    assert adamw_kwargs([param("cuda"), param("cpu")]) == {}
    assert adamw_kwargs([param("cuda"), param("cuda", torch.int64)]) == {}
    assert adamw_kwargs([param("cpu")]) == {} and adamw_kwargs([]) == {}
    opt = build_optimizer([nn.Linear(2, 2)], 1e-3, 0.01, (0.9, 0.999), 1e-6)
    assert not opt.defaults["fused"]  # CPU: PyTorch's default implementation


TINY = sorted(p for p in PRESETS if p.endswith("-tiny"))


@pytest.mark.parametrize("preset", TINY)
def test_every_tiny_preset_trains_on_every_objective(synth, preset, tmp_path):
    """One step per objective: finite loss, and a gradient for every parameter of model and heads."""
    torch.manual_seed(0)
    for task_name in ("pretrain", "vqa", "retrieval", "refexp"):
        config = load_config(synth_config(task_name), [f"data.root={synth}", f"model.preset={preset}",
                                                       "model.init_from=null", f"output_dir={tmp_path}"])
        model = create_model(preset)
        task = build_task(config, model.config, DistContext())
        heads = task.build_heads(model)
        data = task.train_dataset()
        batch, labels = data.collate([data[i] for i in range(8)])
        result = task.step(model, heads, batch, labels)
        assert math.isfinite(float(result.loss)), (preset, task_name)
        result.loss.backward()
        params = list(model.named_parameters()) + [(f"heads.{n}", p) for n, p in heads.named_parameters()]
        # Pretraining reaches everything, the tied word embedding included; so do VQA and retrieval.
        no_grad = [n for n, p in params if p.grad is None]
        assert all(torch.isfinite(p.grad).all() for _, p in params if p.grad is not None), (preset, task_name)
        if task_name == "refexp":
            # The region head leaves the poolers, and a dual-stream model's last text sub-layers, unused,
            # which DDP must be told about.
            last = f"cross_layers.{model.config.cross_layers - 1}.text_"
            no_grad = [n for n in no_grad if "pooler" not in n and not n.startswith(last)]
            assert not task.uses_every_parameter
        assert not no_grad, (preset, task_name, no_grad[:5])


def test_init_from_a_model_directory_or_a_state_dict_file(tmp_path):
    from safetensors.torch import save_file

    from switchbert.train.config import from_dict
    from switchbert.train.trainer import initial_model

    torch.manual_seed(1)
    source = create_model("uniter-tiny")
    source.save_pretrained(tmp_path / "model")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ddp.pt")
    for init_from in (tmp_path / "model", tmp_path / "weights.safetensors", tmp_path / "ddp.pt"):
        model = initial_model(from_dict({"task": "vqa", "model": {"preset": "uniter-tiny", "init_from": str(init_from)}}))
        for k, v in source.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), (init_from, k)
    torch.save({"bert.encoder.layer.0.attention_self.query.weight": torch.zeros(2)}, tmp_path / "volta.bin")
    with pytest.raises(ValueError, match="switchbert import"):
        initial_model(from_dict({"task": "vqa", "model": {"preset": "uniter-tiny", "init_from": str(tmp_path / "volta.bin")}}))
    with pytest.raises(ValueError, match="exclusive"):
        initial_model(from_dict({"task": "vqa", "model": {"init_from": str(tmp_path / "model"), "bert_dir": "x"}}))


# ------------------------------------------------------------------------------- the loop's parts
def test_nonfinite_watch_keeps_the_first_bad_step_and_what_it_was():
    from switchbert.train.nonfinite import NonFiniteWatch, last_good_text, nonfinite_message, total_norm

    watch = NonFiniteWatch(torch.device("cpu"))
    watch.update(torch.tensor(1.0), 1, torch.tensor(2.0))
    assert watch.first() is None
    watch.update(torch.tensor(1.0), 2, torch.tensor(float("inf")))  # the gradient goes first
    watch.update(torch.tensor(float("nan")), 3)
    assert watch.first() == (2, float("inf"), "gradient norm")
    grads = [torch.tensor([3.0]), torch.tensor([4.0])]
    assert float(total_norm(grads)) == pytest.approx(5.0)
    from switchbert.train.checkpoint import TrainerState

    state = TrainerState(step=5, epoch=1, step_in_epoch=4)
    message = nonfinite_message(float("inf"), 2, "gradient norm", state, (Path("run/last"), 1))
    assert message.startswith("gradient norm is inf at optimizer step 2 (epoch 2, step 1 of the epoch); "
                              "stopping (noticed at step 5")
    assert last_good_text(None) == "no checkpoint was written yet" in nonfinite_message(1.0, 5, "loss", state, None)


def test_progress_lines_and_throughput_window(caplog):
    import logging

    from switchbert.train.progress import TrainProgress, duration

    assert duration(3723.4) == "1:02:03" and duration(float("nan")) == "?" and duration(-1) == "?"
    progress = TrainProgress(total=10, initial=2, desc="x", show=False, print_lines=True)
    progress.count(8)
    progress.count(8)
    assert progress.window_samples == 16 and progress.samples_per_s() > 0
    with caplog.at_level(logging.INFO):
        progress.report(4, 0, 1.5, 1e-4, 0.9, 12.0)
    # Epochs count from 1 on the console (the end-of-epoch lines do too); one notation for the rate.
    assert caplog.records[-1].getMessage().startswith("step 4/10  epoch 1  loss 1.5000  lr 1e-04  tau 0.900  "
                                                      "12.0 samples/s  ")
    assert caplog.records[-1].getMessage().endswith(" left")
    assert progress.window_samples == 0  # a new window per log step
    with caplog.at_level(logging.INFO):
        progress.report(5, 0, 1.5, 6e-4, None, 12.0)  # a model without switches has no temperature
    assert caplog.records[-1].getMessage().startswith("step 5/10  epoch 1  loss 1.5000  lr 6e-04  12.0 samples/s")
    progress.close()


def _spy_on_the_loop(monkeypatch) -> list[tuple]:
    """Records the loop's parts as they run: (name, step after it)."""
    calls: list[tuple] = []
    for name in ("_setup", "_train_step", "_log", "_should_stop", "_maybe_checkpoint", "_stop", "_end_epoch"):
        real = getattr(Trainer, name)

        def spy(self, *args, _real=real, _name=name):
            result = _real(self, *args)
            run = result if _name == "_setup" else args[0]
            calls.append((_name, run.state.step) if _name != "_should_stop" else (_name, run.state.step, result))
            return result

        monkeypatch.setattr(Trainer, name, spy)
    return calls


def test_the_loop_runs_its_named_parts_in_order(synth, tmp_path, monkeypatch):
    """setup; per step: train step, log (step 1 and every log_every), should-stop, checkpoint cadence;
    per epoch: end of epoch. Stopped early (stop_after): the stop's last/ instead of the end of epoch."""
    calls = _spy_on_the_loop(monkeypatch)
    config = load_config(synth_config("vqa"), [f"data.root={synth}", f"output_dir={tmp_path / 'full'}",
                                               "model.init_from=null", "train.batch_size=8", "train.max_steps=3",
                                               "train.log_every=2", *QUIET])
    result = Trainer(config).fit()
    assert result["step"] == 3 and not result["stopped_early"]

    def step(s: int, logged: bool) -> list[tuple]:
        return [("_train_step", s), *[("_log", s)] * logged, ("_should_stop", s, False), ("_maybe_checkpoint", s)]

    assert calls[0] == ("_setup", 0)
    assert calls[1:-1] == step(1, True) + step(2, True) + step(3, False)
    assert calls[-1] == ("_end_epoch", 3)

    calls.clear()
    config = load_config(synth_config("vqa"), [f"data.root={synth}", f"output_dir={tmp_path / 'stopped'}",
                                               "model.init_from=null", "train.batch_size=8", "train.stop_after=2",
                                               "train.log_every=50", *QUIET])
    result = Trainer(config).fit()
    assert result["step"] == 2 and result["stopped_early"] and result["signal"] is None
    assert calls == [("_setup", 0), ("_train_step", 1), ("_log", 1), ("_should_stop", 1, False),
                     ("_maybe_checkpoint", 1), ("_train_step", 2), ("_should_stop", 2, True), ("_stop", 2)]


def test_the_trainer_gives_the_switchers_their_own_rate(synth, tmp_path, monkeypatch):
    """train.switch_lr_scale reaches the optimizer the trainer builds: four groups, the switchers' at lr x scale."""
    from switchbert.train import trainer as trainer_module

    built = []

    def recording(*args, **kwargs):
        built.append(build_optimizer(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer_module, "build_optimizer", recording)
    config = load_config(synth_config("vqa"), [f"data.root={synth}", f"output_dir={tmp_path / 'r'}",
                                               "model.init_from=null", "train.batch_size=8", "train.max_steps=1",
                                               "train.warmup=0", "train.switch_lr_scale=10", *QUIET])
    Trainer(config).fit()
    groups = built[0].param_groups
    assert len(groups) == 4
    assert groups[2]["initial_lr"] == pytest.approx(10 * groups[0]["initial_lr"])
