"""The trainer's NaN guard: noticing a non-finite loss or gradient norm without a host sync per step.

A non-finite loss or gradient norm is recorded on the device (``NonFiniteWatch``, a few tiny kernels a
step) and read only where the trainer syncs anyway or must not go on with a bad state: on log steps,
before every checkpoint and at the end of each epoch. The gradient norm is watched as well as the loss
(with ``train.clip=null`` too, see ``total_norm``): an inf gradient turns AdamW's moments and then the
weights into NaN one step before the loss shows it. At checkpoint time the weights and optimizer state
are checked as well (``nonfinite_tensors``), so a written checkpoint can always be resumed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from switchbert.train.checkpoint import TrainerState


class NonFiniteLossError(ValueError):
    """The loss or the gradient norm became NaN or inf, or the weights or optimizer state are not finite
    at checkpoint time; the message names the step and the last good checkpoint."""


def nonfinite_tensors(**modules_and_optimizers: Any) -> list[str]:
    """Names of the parameters and optimizer-state tensors that hold a NaN or inf (one host sync).

    Args:
        modules_and_optimizers: ``name=nn.Module`` or ``name=torch.optim.Optimizer``.
    """
    named: list[tuple[str, torch.Tensor]] = []
    for prefix, obj in modules_and_optimizers.items():
        if isinstance(obj, nn.Module):
            named += [(f"{prefix}.{n}", p) for n, p in obj.named_parameters()]
        else:
            names = {id(p): f"param {i}" for i, p in enumerate(q for g in obj.param_groups for q in g["params"])}
            for p, st in obj.state.items():
                named += [(f"{prefix}.state[{names.get(id(p), '?')}].{k}", v) for k, v in st.items()
                          if torch.is_tensor(v) and v.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t).all() for _, t in named]).tolist()
    return [n for (n, _), good in zip(named, ok) if not good]


class NonFiniteWatch:
    """The first optimizer step whose loss or gradient norm was not finite, and that value, on the device.

    ``update`` is a few tiny kernels and no sync; ``first`` reads the record (one sync), so the trainer
    calls it only where it would sync anyway or must not go on with a bad state (see the module doc).
    """

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)  # -1 = every value so far finite
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.what = torch.zeros((), dtype=torch.long, device=device)  # 0 = loss, 1 = gradient norm

    def update(self, loss: torch.Tensor, step: int, grad_norm: Optional[torch.Tensor] = None) -> None:
        """Records ``loss`` / ``grad_norm`` (0-d, on the device) of optimizer step ``step`` (1-based) if it
        is the first bad one."""
        for what, value in ((0, loss), (1, grad_norm)):
            if value is None:
                continue
            first = (self.step < 0) & ~torch.isfinite(value)
            self.step = torch.where(first, step, self.step)
            self.loss = torch.where(first, value.to(self.loss.dtype), self.loss)
            self.what = torch.where(first, what, self.what)

    def first(self) -> Optional[tuple[int, float, str]]:
        """(step, value, "loss" or "gradient norm") of the first non-finite value, or None."""
        step, value, what = torch.stack([self.step.to(self.loss.dtype), self.loss, self.what.to(self.loss.dtype)]).tolist()
        return None if step < 0 else (int(step), value, "loss" if what == 0 else "gradient norm")


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all ``grads`` together, on the device (no sync), as ``clip_grad_norm_`` computes it."""
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def last_good_text(last_good: Optional[tuple[Path, int]]) -> str:
    """Where to resume from after a NaN: the last checkpoint written (``(path, step)``), or None."""
    if last_good is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {last_good[0]} (step {last_good[1]}); resume with --resume"


def nonfinite_message(value: float, bad_step: int, what: str, state: TrainerState,
                      last_good: Optional[tuple[Path, int]]) -> str:
    """The error for a non-finite ``what`` ("loss" / "gradient norm") first seen at optimizer step
    ``bad_step`` and noticed at ``state.step``."""
    # The watch is read at least once an epoch, so the bad step is in the current epoch.
    in_epoch = state.step_in_epoch - (state.step - bad_step)
    where = f"step {bad_step} (epoch {state.epoch + 1}, step {in_epoch} of the epoch)"  # epochs from 1, as on the console
    late = "" if bad_step == state.step else (
        f" (noticed at step {state.step}: the loss and gradient norm are read every train.log_every steps)")
    return (f"{what} is {value} at optimizer {where}; stopping{late}. {last_good_text(last_good)}. "
            "Try a lower train.lr or train.clip.")
