"""The training loop shared by pretraining and fine-tuning (SPEC §6-§7).

Per optimizer step: set the switch temperature tau(step) (restarted each stage), run ``grad_accum``
micro-batches (each validated on the host before its copy to the device; DDP syncs gradients on the
last one only), average the loss over processes, clip, step AdamW and the warm-up/linear-decay
schedule. After each epoch: validate, write ``last/`` and, when the validation metric improved,
``best/``. ``resume=True`` restores everything from ``last/`` (weights, optimizer, scheduler, RNG
states, the position inside the epoch), so on CPU the resumed run's losses equal an uninterrupted run's.

No host syncs in the step (issue 7): the loss sums and the gradient norm stay on the device and become
Python numbers only on log steps (every ``train.log_every``). A non-finite loss is therefore noticed
late: its step is recorded on the device, and the record is read on log steps, before every checkpoint
and at the end of each epoch. A NaN stops the run at most ``log_every`` steps after it appeared (the
message names the step where it did), and no checkpoint is ever written after it, so ``last/`` is the
last good state. ``train.compile`` runs the forward and backward through ``torch.compile``;
checkpoints are written from the uncompiled modules, so their keys are the usual ones.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from switchbert.batch import Batch
from switchbert.data import make_dataloader
from switchbert.models.base import VLModel
from switchbert.presets import create_model
from switchbert.pretrained import check_state_dict, load_pretrained
from switchbert.temperature import TemperatureSchedule
from switchbert.train.checkpoint import (HEADS_NAME, TrainerState, load_heads, load_trainer_state,
                                         resolve_checkpoint, rng_states, save_checkpoint, set_rng_states)
from switchbert.train.config import ConfigError, ExperimentConfig, save_config
from switchbert.train.distributed import (DistContext, ShardedSampler, all_gather_objects, all_reduce_mean,
                                          barrier, init_distributed, rank_seed)
from switchbert.analysis.flops import training_flops_log_for_batch
from switchbert.analysis.routes import route_probability_log
from switchbert.train.metrics_log import MetricsLog
from switchbert.train.optim import build_optimizer, build_scheduler
from switchbert.train.tasks import EvalContext, StepOutput, Task, build_task

log = logging.getLogger(__name__)


class NonFiniteLossError(ValueError):
    """The loss became NaN or inf; the message names the step and the last good checkpoint."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_overrides(config: ExperimentConfig) -> dict[str, Any]:
    # YAML gives lists; ModelConfig wants tuples for sequence fields (sab_modes).
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.overrides.items()}


def build_model(config: ExperimentConfig) -> VLModel:
    """The model a run starts from: ``init_from`` (a run, a checkpoint, a model directory or a state-dict
    file), else the preset initialised from ``bert_dir`` (or randomly without one)."""
    m = config.model
    overrides = model_overrides(config)
    if m.init_from is not None and m.bert_dir is not None:
        raise ConfigError("model.bert_dir and model.init_from are exclusive: init_from already holds every "
                          "encoder weight (set model.bert_dir=null, or model.init_from=null for 'no pretraining')")
    if m.init_from is None:
        return create_model(m.preset, bert_dir=m.bert_dir, **overrides)
    path = Path(m.init_from).expanduser()
    if path.is_file():
        model = create_model(m.preset, **overrides)
        from switchbert.data.safe_pickle import torch_load_weights

        state = load_file(str(path)) if path.suffix == ".safetensors" else torch_load_weights(path)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            check_state_dict(model, state, source=str(path))
        except ValueError as e:
            raise ValueError(f"{e}\nmodel.init_from must use this library's parameter names; convert a VOLTA or "
                             f"HF checkpoint first (switchbert import-checkpoint {path} DIR --from volta --preset "
                             f"{m.preset}) and set model.init_from=DIR") from None
        model.load_state_dict(state, strict=True)
        return model
    return load_pretrained(resolve_checkpoint(path), **overrides)


def _continue_heads(heads: nn.Module, init_from: Path) -> None:
    """Pretraining from ``init_from`` continues its pretraining heads when it has them (a pretraining
    run, or ``import-checkpoint --from volta``, which writes ``heads.safetensors``); otherwise they start
    fresh. Heads that exist but do not fit are an error naming the tensors."""
    if init_from.is_file():
        return
    ckpt = resolve_checkpoint(init_from)
    if (ckpt / HEADS_NAME).is_file():
        load_heads(heads, ckpt)


class _NonFiniteWatch:
    """The first optimizer step whose loss was not finite, and that loss, kept on the device.

    ``update`` is a few tiny kernels and no sync; ``first`` reads the record (one sync), so the trainer
    calls it only where it would sync anyway or must not go on with a bad state (see the module doc).
    """

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)  # -1 = every loss so far finite
        self.loss = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        """Records ``loss`` (0-d, on the device) of optimizer step ``step`` (1-based) if it is the first bad one."""
        first = (self.step < 0) & ~torch.isfinite(loss)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.to(self.loss.dtype), self.loss)

    def first(self) -> Optional[tuple[int, float]]:
        """(step, loss) of the first non-finite loss, or None."""
        step, loss = torch.stack([self.step.to(self.loss.dtype), self.loss]).tolist()
        return None if step < 0 else (int(step), loss)


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

    def fit(self) -> dict[str, Any]:
        """Trains; returns {"step", "best_metric", "best_value", "stopped_early", "is_main"}."""
        cfg, t = self.config, self.config.train
        self._check_output_dir()
        ctx = init_distributed(t.device)
        self.ctx = ctx
        seed_everything(t.seed)
        if self.resume:
            model = load_pretrained(self.out / "last")
        else:
            model = build_model(cfg)
        task = build_task(cfg, model.config, ctx)
        heads = task.build_heads(model)
        if ctx.rank > 0:  # own dropout / Gumbel streams per rank (train/distributed.py); rank 0 = one process
            seed_everything(rank_seed(t.seed, ctx.rank))
        if self.resume:
            task.load_assets(self.out / "last")
            load_heads(heads, self.out / "last")
        elif task.name == "pretrain" and cfg.model.init_from is not None:
            _continue_heads(heads, Path(cfg.model.init_from).expanduser())
        best_name, higher_better = task.best_metric()
        model.to(ctx.device).train()
        heads.to(ctx.device).train()

        train_set = task.train_dataset()
        indices = self._train_indices(len(train_set))
        B = t.batch_size
        if B % (ctx.world_size * t.grad_accum):
            raise ConfigError(f"{self.source}: train.batch_size={B} must be divisible by processes x grad_accum "
                              f"= {ctx.world_size} x {t.grad_accum}")
        micro = B // (ctx.world_size * t.grad_accum)
        steps_per_epoch = len(indices) // B
        if steps_per_epoch == 0:
            raise ConfigError(f"{self.source}: train.batch_size={B} exceeds the {len(indices)} training items "
                              f"(data.fraction={cfg.data.fraction})")
        total = steps_per_epoch * t.epochs if t.max_steps is None else min(t.max_steps, steps_per_epoch * t.epochs)

        optimizer = build_optimizer([model, heads], t.lr, t.weight_decay, t.betas, t.eps)  # fused on CUDA
        scheduler = build_scheduler(optimizer, total, t.warmup)
        tau = TemperatureSchedule(total_steps=total, tau_max=t.tau_max, tau_min=t.tau_min, kind=t.tau_kind)
        state = TrainerState(total_steps=total, best_metric=best_name, global_batch=B)
        if self.resume:
            state = self._restore(optimizer, scheduler, state, ctx)

        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            if not self.resume:
                task.save_assets(self.out)
        metrics_log = MetricsLog(self.out, enabled=ctx.is_main, tensorboard=t.tensorboard,
                                 truncate_after_step=state.step if self.resume else None)
        step_module: nn.Module = _TrainModule(model, heads, task)
        if ctx.distributed:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=not task.uses_every_parameter)
        params = [p for p in step_module.parameters() if p.requires_grad]
        # Compiled or not, the parameters are the same objects; checkpoints use model and heads
        # directly, so their keys never get torch.compile's "_orig_mod." prefix.
        forward = torch.compile(step_module) if t.compile else step_module
        watch = _NonFiniteWatch(ctx.device)
        autocast = self._autocast(ctx)
        show = t.progress and ctx.is_main and sys.stderr.isatty()
        bar = tqdm(total=total, initial=state.step, desc=f"{cfg.task} {model.config.name}", unit="step", disable=not show)
        if ctx.is_main:
            log.info("%s: %d training items, %d steps/epoch x %d epochs = %d steps, global batch %d (%d x %d x %d)",
                     cfg.task, len(indices), steps_per_epoch, t.epochs, total, B, ctx.world_size, t.grad_accum, micro)

        steps_this_run, stopped = 0, False
        window_start, window_samples = time.perf_counter(), 0
        while state.step < total and not stopped:
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(state.epoch)  # fresh masks / negatives per epoch
            sampler = ShardedSampler(indices, B, t.seed, state.epoch, ctx.rank, ctx.world_size,
                                     skip=state.step_in_epoch * B // ctx.world_size)
            loader = make_dataloader(train_set, micro, sampler=sampler, num_workers=cfg.data.num_workers,
                                     pin_memory=ctx.device.type == "cuda", seed=t.seed)
            batches = iter(loader)
            while state.step_in_epoch < steps_per_epoch and state.step < total:
                current_tau = tau(state.step)
                model.set_temperature(current_tau)
                sums, routes = self._accumulate(step_module, forward, batches, t.grad_accum, ctx, autocast,
                                                model.config.region_feat_dim)
                sums = all_reduce_mean(sums, ctx)  # (1 + parts,) on the device, mean over processes
                watch.update(sums[0], state.step + 1)
                grad_norm = None
                if t.clip is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, t.clip)  # a device tensor
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.step_in_epoch += 1
                steps_this_run += 1
                window_samples += B
                if state.step % t.log_every == 0 or state.step == 1:
                    # The step's only syncs, every log_every steps: the NaN record and the logged values.
                    self._check_finite(watch, state)
                    loss, *parts = sums.tolist()
                    elapsed = max(time.perf_counter() - window_start, 1e-9)
                    values = {"loss": loss, **dict(zip(self._part_names, parts)),
                              "lr": lr, "tau": current_tau, "samples_per_s": window_samples / elapsed}
                    if grad_norm is not None:
                        values["grad_norm"] = float(grad_norm)
                    values.update(route_probability_log(routes))
                    values.update(training_flops_log_for_batch(model.config, routes, self._routes_batch,
                                                               t.route_active_threshold))
                    metrics_log.log("train", state.step, state.epoch, values)
                    bar.set_postfix(loss=f"{loss:.4f}", tau=f"{current_tau:.3f}",
                                    samples_s=f"{window_samples / elapsed:.1f}")
                    window_start, window_samples = time.perf_counter(), 0
                bar.update(1)
                if t.stop_after is not None and steps_this_run >= t.stop_after and state.step < total:
                    stopped = True
                    break
                if t.checkpoint_every and state.step % t.checkpoint_every == 0:
                    self._check_finite(watch, state)
                    self._save("last", model, heads, optimizer, scheduler, state, task, ctx)
            self._check_finite(watch, state)  # before any checkpoint, and so a NaN never crosses an epoch
            if stopped:
                self._save("last", model, heads, optimizer, scheduler, state, task, ctx)
                break
            # End of an epoch (or of the stage): validate, then checkpoint.
            metrics = self._validate(model, heads, task, ctx, autocast)
            metrics_log.log("val", state.step, state.epoch, metrics)
            state.history.append({"epoch": state.epoch, "step": state.step, **metrics})
            value = metrics.get(best_name)
            improved = value is not None and (state.best_value is None or
                                              (value > state.best_value if higher_better else value < state.best_value))
            if improved:
                state.best_value, state.best_step = value, state.step
            state.epoch += 1
            state.step_in_epoch = 0
            self._save("last", model, heads, optimizer, scheduler, state, task, ctx)
            if improved:
                self._save("best", model, heads, optimizer, scheduler, state, task, ctx)
            if ctx.is_main:
                log.info("epoch %d (step %d): %s", state.epoch, state.step,
                         ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        bar.close()
        metrics_log.close()
        barrier(ctx)
        return {"step": state.step, "best_metric": best_name, "best_value": state.best_value,
                "stopped_early": stopped, "is_main": ctx.is_main}

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
        rng = all_gather_objects(rng_states(), ctx)  # every rank's RNG, so a DDP resume is exact too
        if ctx.is_main:
            save_checkpoint(self.out / name, model, heads, optimizer, scheduler, state, rng, assets=task.save_assets)
        if name == "last":
            self.last_good = (self.out / name, state.step)
        barrier(ctx)

    def _restore(self, optimizer, scheduler, state: TrainerState, ctx: DistContext) -> TrainerState:
        payload = load_trainer_state(self.out / "last")
        saved = TrainerState(**payload["state"])
        for key in ("global_batch", "total_steps"):
            if getattr(saved, key) != getattr(state, key):
                raise ConfigError(
                    f"--resume: the checkpoint has {key}={getattr(saved, key)} but this config gives "
                    f"{getattr(state, key)}; change train.epochs / max_steps / batch_size back to resume exactly")
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        rng = payload["rng"]
        if len(rng) != ctx.world_size:
            log.warning("resuming with %d processes from a checkpoint of %d: RNG streams differ from the "
                        "original run", ctx.world_size, len(rng))
        set_rng_states(rng[ctx.rank if ctx.rank < len(rng) else 0])
        self.last_good = (self.out / "last", saved.step)
        return saved

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

    def _check_finite(self, watch: _NonFiniteWatch, state: TrainerState) -> None:
        """Raises ``NonFiniteLossError`` if a loss since the start of the run was NaN or inf (one sync)."""
        bad = watch.first()
        if bad is not None:
            raise NonFiniteLossError(self._nonfinite_message(bad[1], bad[0], state))

    def _nonfinite_message(self, loss: float, bad_step: int, state: TrainerState) -> str:
        # The watch is read at least once an epoch, so the bad step is in the current epoch.
        in_epoch = state.step_in_epoch - (state.step - bad_step)
        where = f"step {bad_step} (epoch {state.epoch}, step {in_epoch} of the epoch)"
        late = "" if bad_step == state.step else (
            f" (noticed at step {state.step}: the loss is read every train.log_every steps)")
        if self.last_good is None:
            good = "no checkpoint was written yet"
        else:
            good = f"the last good checkpoint is {self.last_good[0]} (step {self.last_good[1]}); resume with --resume"
        return f"loss is {loss} at optimizer {where}; stopping{late}. {good}. Try a lower train.lr or train.clip."
