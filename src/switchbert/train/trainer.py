"""The training loop shared by pretraining and fine-tuning (docs/method.md §6-§7).

Per optimizer step: set the switch temperature tau(step) (restarted each stage), run ``grad_accum``
micro-batches (each validated on the host before its copy to the device; DDP syncs gradients on the
last one only), average the loss over processes, clip, step AdamW and the warm-up/linear-decay
schedule. After each epoch: write ``last/`` (the trained epoch, so a failure in validation loses no
training), validate, write ``last/`` again and, when the validation metric improved, ``best/``.
``resume=True`` restores everything from ``last/`` (weights, optimizer, scheduler, RNG states, the
position inside the epoch; from a ``last/`` written before its validation, that validation runs first),
so on CPU the resumed run's losses equal an uninterrupted run's.

No host syncs in the step (docs/performance.md, "Host syncs in the training step"): the loss sums and the
gradient norm stay on the device and become Python numbers only on log steps (every ``train.log_every``). A
non-finite loss or gradient norm (the norm is computed without ``train.clip`` too: an inf gradient makes NaN
weights a step before the loss shows it) is therefore noticed late: its step is recorded on the device, and
the record is read on log steps, before every checkpoint and at the end of each epoch. A NaN stops the run
at most ``log_every`` steps after it appeared (the message names the step where it did), and no checkpoint
is ever written after it; every checkpoint also checks that the weights and optimizer state are finite, so
``last/`` is the last good state.

The run directory is locked for the run (``rundir.RunLock``), and interrupted checkpoint writes are
repaired before anything else (``checkpoint.recover_dir``). SIGTERM and SIGINT finish the step in
flight, write ``last/`` and return (``"signal"`` in the result); under DDP the processes agree on the
next log step. Without a progress bar, a console line every ``log_every`` steps; with one, log records
go through ``tqdm.write``. ``train.compile`` runs the forward and backward through ``torch.compile``;
checkpoints are written from the uncompiled modules, so their keys are the usual ones.

``Trainer._fit`` reads top to bottom: ``_setup`` builds a ``_Run`` (model, heads, optimizer, state,
...); each epoch ``_train_epoch`` repeats ``_train_step``, ``_log`` (on log steps), ``_should_stop`` and
``_maybe_checkpoint``; then ``_save_trained`` writes ``last/`` and ``_end_epoch`` validates and
checkpoints. The NaN guard lives in ``train/nonfinite.py``, the bar and console lines in ``train/progress.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from switchbert.batch import Batch
from switchbert.data import make_dataloader
from switchbert.models.base import VLModel
from switchbert import models
from switchbert.models import ExclusiveSourcesError, load_pretrained
from switchbert.models.build import FROM_CHECKPOINT, ArchitectureMismatchError
from switchbert.temperature import TemperatureSchedule
from switchbert.train.checkpoint import (HEADS_NAME, TrainerState, load_heads, load_trainer_state, recover_dir,
                                         resolve_checkpoint, rng_states, save_checkpoint, set_rng_states)
from switchbert.train.config import ConfigError, ExperimentConfig, save_config
from switchbert.train.distributed import (DistContext, ShardedSampler, all_gather_objects, all_reduce_mean,
                                          barrier, init_distributed, rank_seed)
from switchbert.analysis.flops import training_flops_log_for_batch
from switchbert.analysis.routes import route_probability_log
from switchbert.train.metrics_log import MetricsLog
from switchbert.train.rundir import RunLock, RunLockedError, resume_differences
from switchbert.train.optim import build_optimizer, build_scheduler
from switchbert.train.nonfinite import (NonFiniteLossError, NonFiniteWatch, last_good_text, nonfinite_message,
                                        nonfinite_tensors, total_norm)
from switchbert.train.progress import TrainProgress
from switchbert.train.tasks import EvalContext, StepOutput, Task, build_task

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_overrides(config: ExperimentConfig) -> dict[str, Any]:
    # YAML gives lists; ModelConfig wants tuples for sequence fields (sab_modes).
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.overrides.items()}


def initial_model(config: ExperimentConfig) -> VLModel:
    """The model a run starts from: ``models.build_model`` with the config's model section (``init_from``
    a run, a checkpoint, a model directory or a state-dict file; else the preset from ``bert_dir``, or
    randomly initialised without one)."""
    m = config.model
    try:
        model = models.build_model(m.preset, bert_dir=m.bert_dir, init_from=m.init_from, **model_overrides(config))
    except (ExclusiveSourcesError, ArchitectureMismatchError) as e:
        raise ConfigError(str(e)) from None
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 says it
        return model
    if m.preset == FROM_CHECKPOINT:  # the explicit choice, said once at the start
        log.warning("model.preset=%s: training the %r model that %s holds", FROM_CHECKPOINT, model.config.name,
                    m.init_from)
    source = (f"init_from {m.init_from}" if m.init_from is not None else
              f"BERT from {m.bert_dir}" if m.bert_dir is not None else "random (no BERT, no init_from)")
    log.info("model %s: %s parameters; weights: %s", model.config.name,
             f"{sum(p.numel() for p in model.parameters()):,}", source)
    return model


def _continue_heads(heads: nn.Module, init_from: Path) -> None:
    """Pretraining from ``init_from`` continues its pretraining heads when it has them (a pretraining
    run, or ``import-checkpoint --from volta``, which writes ``heads.safetensors``); otherwise they start
    fresh. Heads that exist but do not fit are an error naming the tensors."""
    if init_from.is_file():
        return
    ckpt = resolve_checkpoint(init_from)
    if (ckpt / HEADS_NAME).is_file():
        load_heads(heads, ckpt)


def validation_pending(state: TrainerState, steps_per_epoch: int, total: int) -> bool:
    """Whether the current epoch's steps are all done and its validation is still to run: the state
    ``Trainer._save_trained`` (or a stop at an epoch's last step) leaves in ``last/``. Read from the
    counters the checkpoint always had (no new field): only then is ``step_in_epoch`` positive at an
    epoch's end, since ``_end_epoch`` resets it."""
    s = state
    return s.step_in_epoch > 0 and (s.step_in_epoch >= steps_per_epoch or s.step >= total)


@dataclass
class _Run:
    """What ``Trainer._setup`` builds for one run, and the loop's running counts."""

    model: VLModel
    heads: nn.Module
    task: Task
    best_name: str  # the validation metric that selects best/
    higher_better: bool
    train_set: Dataset
    indices: list[int]  # the training items used (data.fraction)
    micro: int  # micro-batch per process
    steps_per_epoch: int
    total: int  # optimizer steps in the stage
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    tau: TemperatureSchedule
    state: TrainerState  # what a checkpoint saves
    metrics_log: MetricsLog
    step_module: nn.Module  # _TrainModule, DDP-wrapped under torchrun
    forward: Callable[..., StepOutput]  # step_module or its torch.compile wrapper
    params: list[torch.Tensor]  # the trained parameters (clipping, the gradient norm)
    watch: NonFiniteWatch
    autocast: Callable[[], ContextManager]
    progress: TrainProgress
    has_switches: bool = True  # False: the console shows no temperature (UNITER, VisualBERT, ...)
    steps_this_run: int = 0  # for train.stop_after
    stopped: bool = False  # by a signal or train.stop_after, before the stage's end
    stop_signal: Optional[int] = None


@dataclass
class _Step:
    """One optimizer step's results, on the device until a log step reads them."""

    sums: torch.Tensor  # (1 + parts,) float64: mean loss and loss parts over micro-batches and processes
    routes: tuple  # the last micro-batch's route probabilities
    grad_norm: torch.Tensor  # 0-d, before clipping
    lr: float  # the LR this step used
    tau: float  # the switch temperature this step used
    log: bool  # a log step (every train.log_every, and step 1)


class _TrainModule(nn.Module):
    """Model + heads as one module, so DDP sees every trained parameter and one forward call."""

    def __init__(self, model: VLModel, heads: nn.Module, task: Task) -> None:
        super().__init__()
        self.model, self.heads = model, heads
        object.__setattr__(self, "task", task)  # not a module

    def forward(self, batch: Batch, labels: Any) -> StepOutput:
        return self.task.step(self.model, self.heads, batch, labels)


class Trainer:
    """Runs one training stage of an experiment.

    Args:
        config: the experiment.
        resume: continue from ``output_dir/last`` exactly where it stopped.
        source: the config's file name, for messages.
    """

    def __init__(self, config: ExperimentConfig, resume: bool = False, source: str = "<config>") -> None:
        self.config, self.resume, self.source = config, resume, source
        self.out = Path(config.output_dir)
        self.last_good: Optional[tuple[Path, int]] = None

    # -- setup ------------------------------------------------------------------------------------
    def _check_output_dir(self) -> None:
        last = self.out / "last"
        if self.resume and not last.exists():
            raise ConfigError(f"--resume: {self.out} has no last/ checkpoint to resume from")
        if not self.resume and (last.exists() or (self.out / "best").exists()):
            raise ConfigError(f"output_dir {self.out} already holds a run; pass --resume to continue it "
                              "or choose another output_dir")

    def _prepare_output_dir(self, ctx: DistContext) -> None:
        """Rank 0 locks the run directory and repairs interrupted checkpoint writes; then every rank
        checks it. An error on rank 0 reaches every rank, so none waits at a barrier for ever."""
        error: Optional[str] = None
        if ctx.is_main:
            try:
                self._lock = RunLock(self.out).acquire()
                for name in ("last", "best"):
                    for action in recover_dir(self.out / name):
                        log.warning("%s", action)
            except (RunLockedError, OSError) as e:
                error = str(e)
        errors = [e for e in all_gather_objects(error, ctx) if e]
        if errors:
            raise ConfigError(errors[0])
        self._check_output_dir()

    def fit(self) -> dict[str, Any]:
        """Trains; returns {"step", "best_metric", "best_value", "stopped_early", "signal", "is_main"}.

        ``signal`` is the signal number (SIGTERM, SIGINT) that stopped the run after writing last/, or None.
        """
        ctx = init_distributed(self.config.train.device)
        self.ctx = ctx
        self._lock: Optional[RunLock] = None
        self._signal: Optional[int] = None
        previous = self._install_signal_handlers()
        try:
            self._prepare_output_dir(ctx)
            return self._fit(ctx)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._lock is not None:
                self._lock.release()

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM and SIGINT ask for a checkpoint at the next step boundary; a second one acts at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signals only reach the main thread

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:  # asked twice: stop now (KeyboardInterrupt / default SIGTERM)
                signal.signal(signum, previous.get(signum, signal.SIG_DFL))
                signal.raise_signal(signum)
                return
            self._signal = signum
            log.warning("%s received: writing last/ at the end of this step, then stopping (send it again "
                        "to stop at once)", signal.Signals(signum).name)

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        for sig in previous:
            signal.signal(sig, handler)
        return previous

    def _fit(self, ctx: DistContext) -> dict[str, Any]:
        """The loop: epochs of steps until the stage's last step, a signal or ``train.stop_after``."""
        run = self._setup(ctx)
        with run.progress.redirect():
            while not run.stopped:
                if not self._epoch_trained(run):  # else resumed after a failure in this epoch's validation
                    if run.state.step >= run.total:
                        break
                    self._train_epoch(run, ctx)
                    self._check_finite(run.watch, run.state)  # before any checkpoint; a NaN never crosses an epoch
                    if run.stopped:
                        self._stop(run, ctx)
                        break
                    self._save_trained(run, ctx)
                self._end_epoch(run, ctx)
        run.progress.close()
        run.metrics_log.close()
        barrier(ctx)
        return {"step": run.state.step, "best_metric": run.best_name, "best_value": run.state.best_value,
                "stopped_early": run.stopped, "signal": run.stop_signal, "is_main": ctx.is_main}

    # -- the loop's parts, in the order they run --------------------------------------------------
    def _setup(self, ctx: DistContext) -> _Run:
        """Everything the loop needs, built in a fixed order (the RNG draws of a resumed run match)."""
        cfg, t = self.config, self.config.train
        model, heads, task = self._model_and_heads(ctx)
        best_name, higher_better = task.best_metric()
        model.to(ctx.device).train()
        heads.to(ctx.device).train()

        train_set = task.train_dataset()
        indices = self._train_indices(len(train_set))
        micro, steps_per_epoch, total = self._sizes(len(indices), ctx)
        optimizer = build_optimizer([model, heads], t.lr, t.weight_decay, t.betas, t.eps,
                                    switch_lr_scale=t.switch_lr_scale)  # fused on CUDA
        scheduler = build_scheduler(optimizer, total, t.warmup)
        tau = TemperatureSchedule(total_steps=total, tau_max=t.tau_max, tau_min=t.tau_min, kind=t.tau_kind)
        state = TrainerState(total_steps=total, best_metric=best_name, global_batch=t.batch_size)
        if self.resume:
            state = self._restore(optimizer, scheduler, state, ctx)

        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            if not self.resume:
                task.save_assets(self.out)
        pending = self.resume and validation_pending(state, steps_per_epoch, total)
        metrics_log = MetricsLog(self.out, enabled=ctx.is_main, tensorboard=t.tensorboard,
                                 truncate_after_step=state.step if self.resume else None,
                                 fresh=not self.resume, redo_validation=pending)
        step_module: nn.Module = _TrainModule(model, heads, task)
        if ctx.distributed:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=not task.uses_every_parameter)
        params = [p for p in step_module.parameters() if p.requires_grad]
        # Compiled or not, the parameters are the same objects; checkpoints use model and heads
        # directly, so their keys never get torch.compile's "_orig_mod." prefix.
        forward = torch.compile(step_module) if t.compile else step_module
        watch = NonFiniteWatch(ctx.device)
        autocast = self._autocast(ctx)
        show = t.progress and ctx.is_main and sys.stderr.isatty()
        if ctx.is_main:  # before the bar is drawn, so the line stands on its own
            log.info("%s", self._plan_message(cfg.task, len(indices), steps_per_epoch, total, t.batch_size, ctx, micro))
        # Without a bar (no terminal: SLURM, nohup; or train.progress=false) a line every log_every steps.
        progress = TrainProgress(total, state.step, f"{cfg.task} {model.config.name}", show=show,
                                 print_lines=ctx.is_main and not show)
        return _Run(model=model, heads=heads, task=task, best_name=best_name, higher_better=higher_better,
                    train_set=train_set, indices=indices, micro=micro, steps_per_epoch=steps_per_epoch, total=total,
                    optimizer=optimizer, scheduler=scheduler, tau=tau, state=state, metrics_log=metrics_log,
                    step_module=step_module, forward=forward, params=params, watch=watch, autocast=autocast,
                    progress=progress, has_switches=bool(model.switchers()))

    def _model_and_heads(self, ctx: DistContext) -> tuple[VLModel, nn.Module, Task]:
        """The model (``last/`` on resume, else ``initial_model``), the task and its heads, restored or
        continued; seeds first, then each rank's own stream (the order fixes every random draw)."""
        cfg, t = self.config, self.config.train
        seed_everything(t.seed)
        model = load_pretrained(self.out / "last") if self.resume else initial_model(cfg)
        task = build_task(cfg, model.config, ctx)
        heads = task.build_heads(model)
        if ctx.rank > 0:  # own dropout / Gumbel streams per rank (train/distributed.py); rank 0 = one process
            seed_everything(rank_seed(t.seed, ctx.rank))
        if self.resume:
            task.load_assets(self.out / "last")
            load_heads(heads, self.out / "last")
        elif task.name == "pretrain" and cfg.model.init_from is not None:
            _continue_heads(heads, Path(cfg.model.init_from).expanduser())
        return model, heads, task

    def _sizes(self, items: int, ctx: DistContext) -> tuple[int, int, int]:
        """(micro-batch per process, steps per epoch, steps in the stage) for ``items`` training items."""
        t, B = self.config.train, self.config.train.batch_size
        if B % (ctx.world_size * t.grad_accum):
            raise ConfigError(f"{self.source}: train.batch_size={B} must be divisible by processes x grad_accum "
                              f"= {ctx.world_size} x {t.grad_accum}")
        micro = B // (ctx.world_size * t.grad_accum)
        steps_per_epoch = items // B
        if steps_per_epoch == 0:
            raise ConfigError(f"{self.source}: train.batch_size={B} exceeds the {items} training items "
                              f"(data.fraction={self.config.data.fraction})")
        total = steps_per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, steps_per_epoch * t.epochs)
        return micro, steps_per_epoch, total

    def _epoch_batches(self, run: _Run, ctx: DistContext) -> Iterator:
        """The micro-batches of the current epoch, from the resumed position within it."""
        t, B = self.config.train, self.config.train.batch_size
        if hasattr(run.train_set, "set_epoch"):
            run.train_set.set_epoch(run.state.epoch)  # fresh masks / negatives per epoch
        sampler = ShardedSampler(run.indices, B, t.seed, run.state.epoch, ctx.rank, ctx.world_size,
                                 skip=run.state.step_in_epoch * B // ctx.world_size)
        loader = make_dataloader(run.train_set, run.micro, sampler=sampler, num_workers=self.config.data.num_workers,
                                 pin_memory=ctx.device.type == "cuda", seed=t.seed)
        return iter(loader)

    def _train_epoch(self, run: _Run, ctx: DistContext) -> None:
        """The epoch's steps from where it stands (mid-epoch on resume); returns early when the run stops."""
        batches = self._epoch_batches(run, ctx)
        while run.state.step_in_epoch < run.steps_per_epoch and run.state.step < run.total:
            step = self._train_step(run, ctx, batches)
            if step.log:
                self._log(run, step)
            run.progress.step_done()
            if self._should_stop(run, ctx, step.log):
                return
            self._maybe_checkpoint(run, ctx)

    def _train_step(self, run: _Run, ctx: DistContext, batches: Iterator) -> _Step:
        """One optimizer step: tau, ``grad_accum`` micro-batches, clip, AdamW, schedule. No host sync."""
        t, state = self.config.train, run.state
        tau = run.tau(state.step)
        run.model.set_temperature(tau)
        sums, routes = self._accumulate(run.step_module, run.forward, batches, t.grad_accum, ctx, run.autocast,
                                        run.model.config.region_feat_dim)
        sums = all_reduce_mean(sums, ctx)  # (1 + parts,) on the device, mean over processes
        if t.clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(run.params, t.clip)  # a device tensor
        else:  # no clipping, but the norm is still watched (an inf gradient makes NaN weights)
            grad_norm = total_norm([p.grad for p in run.params if p.grad is not None])
        run.watch.update(sums[0], state.step + 1, grad_norm)
        lr = run.optimizer.param_groups[0]["lr"]
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.step_in_epoch += 1
        run.steps_this_run += 1
        run.progress.count(t.batch_size)
        return _Step(sums=sums, routes=routes, grad_norm=grad_norm, lr=lr, tau=tau,
                     log=state.step % t.log_every == 0 or state.step == 1)

    def _log(self, run: _Run, step: _Step) -> None:
        """A log step: metrics.jsonl (+ TensorBoard) and the console."""
        # The step's only syncs, every log_every steps: the NaN record and the logged values.
        self._check_finite(run.watch, run.state)
        loss, *parts = step.sums.tolist()
        samples_per_s = run.progress.samples_per_s()
        values = {"loss": loss, **dict(zip(self._part_names, parts)),
                  "lr": step.lr, "tau": step.tau, "samples_per_s": samples_per_s, "grad_norm": float(step.grad_norm)}
        values.update(route_probability_log(step.routes))
        values.update(training_flops_log_for_batch(run.model.config, step.routes, self._routes_batch,
                                                   self.config.train.route_active_threshold))
        run.metrics_log.log("train", run.state.step, run.state.epoch, values)
        tau = step.tau if run.has_switches else None
        run.progress.report(run.state.step, run.state.epoch, loss, step.lr, tau, samples_per_s)

    def _should_stop(self, run: _Run, ctx: DistContext, log_step: bool) -> bool:
        """A signal (under DDP, agreed on log steps) or ``train.stop_after`` ends the run after this step;
        sets ``run.stopped`` (and ``run.stop_signal``). Never at the stage's last step, which ends normally."""
        if ctx.distributed:  # every rank must stop at the same step: they agree on log steps
            want_stop = log_step and any(all_gather_objects(self._signal, ctx))
        else:  # one process: at this step boundary
            want_stop = self._signal is not None
        if run.state.step >= run.total:
            return False
        if want_stop:
            run.stop_signal = self._signal or signal.SIGTERM  # (another rank was signalled)
        stop_after = self.config.train.stop_after
        run.stopped = want_stop or (stop_after is not None and run.steps_this_run >= stop_after)
        return run.stopped

    def _maybe_checkpoint(self, run: _Run, ctx: DistContext) -> None:
        """``last/`` every ``train.checkpoint_every`` steps."""
        every = self.config.train.checkpoint_every
        if every and run.state.step % every == 0:
            self._check_finite(run.watch, run.state)
            self._save_run("last", run, ctx)

    def _stop(self, run: _Run, ctx: DistContext) -> None:
        """Stopped by a signal or ``train.stop_after``: ``last/`` holds where to resume."""
        self._save_run("last", run, ctx)
        if run.stop_signal is not None and ctx.is_main:
            log.warning("stopped by %s at step %d of %d; %s holds it: continue with --resume",
                        signal.Signals(run.stop_signal).name, run.state.step, run.total, self.out / "last")

    @staticmethod
    def _epoch_trained(run: _Run) -> bool:
        return validation_pending(run.state, run.steps_per_epoch, run.total)

    def _save_trained(self, run: _Run, ctx: DistContext) -> None:
        """``last/`` with the epoch trained, before its validation, so a failure there (a bad record, an
        evaluator error, Ctrl-C, a kill) loses no training. The epoch counters are not advanced yet and the
        RNG states are those validation starts from, so ``--resume`` runs this validation, not the epoch,
        and continues exactly. Skipped when ``train.checkpoint_every`` has just written this step."""
        if self.last_good != (self.out / "last", run.state.step):
            self._save_run("last", run, ctx)

    def _end_epoch(self, run: _Run, ctx: DistContext) -> None:
        """End of an epoch (or of the stage), ``last/`` already holding its trained state: validate, then
        ``last/`` again (epoch counters advanced, the validation in the history) and, when the metric
        improved, ``best/``."""
        state = run.state
        if state.step_in_epoch < run.steps_per_epoch and ctx.is_main:
            log.info("epoch %d cut short by train.max_steps=%s: %d of its %d steps", state.epoch + 1,
                     self.config.train.max_steps, state.step_in_epoch, run.steps_per_epoch)
        metrics = self._validate(run.model, run.heads, run.task, ctx, run.autocast)
        run.metrics_log.log("val", state.step, state.epoch, metrics)
        state.history.append({"epoch": state.epoch, "step": state.step, **metrics})
        value = metrics.get(run.best_name)
        improved = value is not None and (state.best_value is None or
                                          (value > state.best_value if run.higher_better else value < state.best_value))
        if improved:
            state.best_value, state.best_step = value, state.step
        state.epoch += 1
        state.step_in_epoch = 0
        self._save_run("last", run, ctx)
        if improved:
            self._save_run("best", run, ctx)
        if ctx.is_main:
            log.info("epoch %d (step %d): %s", state.epoch, state.step,
                     ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def _save_run(self, name: str, run: _Run, ctx: DistContext) -> None:
        self._save(name, run.model, run.heads, run.optimizer, run.scheduler, run.state, run.task, ctx)

    def _plan_message(self, task: str, items: int, steps_per_epoch: int, total: int, B: int, ctx: DistContext,
                      micro: int) -> str:
        """"vqa: 1000 training items, 125 steps/epoch x 2 epochs = 250 steps, capped at 180 by
        train.max_steps (epoch 2 stops after 55 of its 125 steps), global batch ..."."""
        t = self.config.train
        full = steps_per_epoch * t.epochs
        plan = f"{steps_per_epoch} steps/epoch x {t.epochs} epochs = {full} steps"
        if total < full:
            epoch, into = divmod(total, steps_per_epoch)
            cut = (f"epoch {epoch + 1} stops after {into} of its {steps_per_epoch} steps" if into
                   else f"{t.epochs - epoch} epochs not run")
            plan += f", capped at {total} by train.max_steps ({cut})"
        dropped = items - steps_per_epoch * B
        tail = f"; the last {dropped} items of each epoch's order are dropped (incomplete batch)" if dropped else ""
        return (f"{task}: {items} training items, {plan}, global batch {B} "
                f"({ctx.world_size} x {t.grad_accum} x {micro}){tail}")

    # -- pieces -----------------------------------------------------------------------------------
    _part_names: tuple[str, ...] = ()

    def _accumulate(self, step_module: nn.Module, forward, batches, accum: int, ctx: DistContext, autocast,
                    region_feat_dim: Optional[int]):
        """Forward + backward of ``accum`` micro-batches.

        Args:
            step_module: the (DDP-wrapped) ``_TrainModule``, for ``no_sync``.
            forward: what runs a micro-batch: ``step_module`` or its ``torch.compile`` wrapper.
            region_feat_dim: the model's F, checked with the batch.

        Returns:
            the mean (loss, parts...) as a (1 + parts,) float64 tensor on the device (no sync), and the
            last micro-batch's routes.
        """
        total: Optional[torch.Tensor] = None
        routes: tuple = ()
        for a in range(accum):
            batch, labels = next(batches)
            # Checked on the host, before the copy: on device tensors Batch.validate makes the host
            # wait for the GPU, so the tasks' steps run the model with validate=False.
            batch.validate(region_feat_dim)
            batch, labels = batch.to(ctx.device, non_blocking=True), labels.to(ctx.device, non_blocking=True)
            sync = a == accum - 1 or not ctx.distributed
            with (contextlib.nullcontext() if sync else step_module.no_sync()):
                with autocast():
                    result: StepOutput = forward(batch, labels)
                (result.loss / accum).backward()
            self._part_names = tuple(result.parts)
            values = torch.stack([result.loss.detach().float(), *[v.float() for v in result.parts.values()]])
            total = values if total is None else total + values
            routes = result.routes
            self._routes_batch = batch  # whose routes these are (masks for the logged FLOPs)
        return total.double() / accum, routes

    def _validate(self, model: VLModel, heads: nn.Module, task: Task, ctx: DistContext, autocast) -> dict[str, float]:
        e = self.config.eval
        model.eval()
        heads.eval()
        try:
            ectx = EvalContext(ctx, e.batch_size, progress=self.config.train.progress and sys.stderr.isatty(),
                               autocast=autocast, max_images=e.retrieval_val_images)
            return task.evaluate(model, heads, task.val_split, ectx)  # heldout with data.val_from_train
        finally:
            model.train()
            heads.train()

    def _save(self, name: str, model, heads, optimizer, scheduler, state: TrainerState, task: Task,
              ctx: DistContext) -> None:
        # Never a checkpoint that cannot be resumed from: the watch only sees the loss and gradient norm,
        # so the weights and AdamW's moments are checked too (one sync, at checkpoint time only). Every
        # rank holds the same values, so every rank raises together.
        bad = nonfinite_tensors(model=model, heads=heads, optimizer=optimizer)
        if bad:
            raise NonFiniteLossError(
                f"not writing {self.out / name} at step {state.step}: {len(bad)} tensors hold NaN or inf "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}). {last_good_text(self.last_good)}. "
                "Try a lower train.lr or train.clip.")
        rng = all_gather_objects(rng_states(), ctx)  # every rank's RNG, so a DDP resume is exact too
        if ctx.is_main:
            save_checkpoint(self.out / name, model, heads, optimizer, scheduler, state, rng, assets=task.save_assets,
                            config=self.config.to_dict())
        if name == "last":
            self.last_good = (self.out / name, state.step)
        barrier(ctx)

    def _restore(self, optimizer, scheduler, state: TrainerState, ctx: DistContext) -> TrainerState:
        payload = load_trainer_state(self.out / "last")
        saved = TrainerState(**payload["state"])
        self._check_resume_config(payload.get("config"))
        if saved.global_batch != state.global_batch:  # batch_size is compared above; processes x accumulation
            raise ConfigError(f"--resume: the checkpoint has global_batch={saved.global_batch} but this config "
                              f"gives {state.global_batch}; change train.batch_size back to resume")
        if state.total_steps < saved.step:
            raise ConfigError(f"--resume: the checkpoint is at step {saved.step}, beyond this config's "
                              f"{state.total_steps} steps (train.epochs / train.max_steps)")
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if saved.total_steps != state.total_steps:
            # epochs / max_steps changed: the LR and tau schedules now span the new length, from this step
            # (the scheduler's lambda was built for it; the next update's LR follows it at once).
            log.warning("--resume: the stage now has %d steps instead of %d; the LR and temperature schedules "
                        "are stretched to it from step %d", state.total_steps, saved.total_steps, saved.step)
            for group, base, lam in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * lam(scheduler.last_epoch)
            saved.total_steps = state.total_steps
        rng = payload["rng"]
        if len(rng) != ctx.world_size:
            log.warning("resuming with %d processes from a checkpoint of %d: RNG streams differ from the "
                        "original run", ctx.world_size, len(rng))
        set_rng_states(rng[ctx.rank if ctx.rank < len(rng) else 0])
        self.last_good = (self.out / "last", saved.step)
        return saved

    def _check_resume_config(self, saved: Optional[dict[str, Any]]) -> None:
        """Refuses a resume whose config differs from the checkpoint's outside ``RESUME_MUTABLE``."""
        source = "the checkpoint"
        if saved is None:  # a checkpoint from before the config was stored in it: the run's config.yaml
            path = self.out / "config.yaml"
            if not path.is_file():
                return
            import yaml

            from switchbert.train.config import from_dict
            saved, source = from_dict(yaml.safe_load(path.read_text()) or {}, str(path)).to_dict(), str(path)
        allowed, refused = resume_differences(saved, self.config.to_dict())
        if refused:
            raise ConfigError(
                f"--resume: these settings differ from {source} and cannot change in a resumed run (they fix "
                f"the optimizer, schedule, data or model): {'; '.join(refused)}. Set them back, or start a new "
                f"run in another output_dir (docs/training.md lists what may change)")
        for line in allowed:
            log.info("--resume: applying %s", line)

    def _train_indices(self, n: int) -> list[int]:
        """All training items, or a random ``data.fraction`` of them fixed by the seed."""
        fraction = self.config.data.fraction
        if fraction >= 1.0:
            return list(range(n))
        k = max(1, int(round(fraction * n)))
        g = torch.Generator().manual_seed(self.config.train.seed + 7919)
        return sorted(torch.randperm(n, generator=g)[:k].tolist())

    def _autocast(self, ctx: DistContext):
        if self.config.train.amp and ctx.device.type == "cuda":
            return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext

    def _check_finite(self, watch: NonFiniteWatch, state: TrainerState) -> None:
        """Raises ``NonFiniteLossError`` if a loss since the start of the run was NaN or inf (one sync)."""
        bad = watch.first()
        if bad is not None:
            raise NonFiniteLossError(nonfinite_message(bad[1], bad[0], bad[2], state, self.last_good))
