"""AdamW with BERT's parameter groups, and the warm-up then linear-decay learning-rate schedule (docs/method.md §6-§7)."""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(modules: Iterable[nn.Module], weight_decay: float, switch_lr: Optional[float] = None) -> list[dict]:
    """Two AdamW groups: decayed weights, and biases + LayerNorm parameters without decay (BERT/VOLTA).

    A parameter reached from several modules (the MLM decoder's tied word embedding) appears once.
    Embedding matrices are decayed, as in BERT. With ``switch_lr`` the switchers' parameters go into
    two more groups (decayed, not decayed) at that learning rate [ours, docs/training.md "Switcher
    learning rate"]; the first group stays the main one, whose rate the trainer logs.
    """
    from switchbert.layers.switcher import Switcher

    in_switcher: set[int] = set()
    if switch_lr is not None:
        for module in modules:
            for sub in module.modules():
                if isinstance(sub, Switcher):
                    in_switcher.update(id(p) for p in sub.parameters())
    decay, no_decay, s_decay, s_no_decay, seen = [], [], [], [], set()
    for module in modules:
        for sub in module.modules():
            for name, p in sub.named_parameters(recurse=False):
                if not p.requires_grad or id(p) in seen:
                    continue
                seen.add(id(p))
                plain = isinstance(sub, nn.LayerNorm) or name == "bias"
                if id(p) in in_switcher:
                    (s_no_decay if plain else s_decay).append(p)
                else:
                    (no_decay if plain else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if switch_lr is not None:
        groups += [{"params": s_decay, "weight_decay": weight_decay, "lr": switch_lr},
                   {"params": s_no_decay, "weight_decay": 0.0, "lr": switch_lr}]
    return groups


def adamw_kwargs(params: Iterable[Any]) -> dict[str, Any]:
    """The AdamW implementation for ``params``: ``{"fused": True}`` when every one is a floating-point
    CUDA tensor, else ``{}`` (PyTorch's default, the multi-tensor ``foreach`` path on GPU).

    The fused kernel updates every parameter in a few launches instead of several per tensor group. It
    needs every parameter on CUDA, so a CPU run, or a model split between devices, keeps the default.
    Reads only ``device`` and ``dtype``, so it is testable without a GPU.
    """
    params = list(params)
    if params and all(p.device.type == "cuda" and p.dtype.is_floating_point for p in params):
        return {"fused": True}
    return {}


def build_optimizer(
    modules: Iterable[nn.Module], lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
    switch_lr_scale: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW over ``modules`` with :func:`param_groups`, fused when :func:`adamw_kwargs` allows it.

    Build it after moving the modules to their device: the choice reads where the parameters are.
    ``switch_lr_scale`` != 1 trains the switchers at ``lr * switch_lr_scale`` (``train.switch_lr_scale``);
    at 1 the groups, and so the optimizer's state layout, are exactly the two of before.
    """
    modules = list(modules)
    groups = param_groups(modules, weight_decay, None if switch_lr_scale == 1.0 else lr * switch_lr_scale)
    kwargs = adamw_kwargs(p for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, **kwargs)


def warmup_linear(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear 0 -> 1 over ``warmup_steps``, then linear 1 -> 0 at ``total_steps``.

    ``step`` is the number of optimizer steps taken so far (the multiplier for the next update).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = total_steps - step
    return max(0.0, remaining / max(1, total_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float) -> LambdaLR:
    """Warm-up for ``warmup_fraction`` of ``total_steps`` then linear decay to 0; stepped once per update."""
    warmup_steps = int(round(warmup_fraction * total_steps))
    return LambdaLR(optimizer, lambda step: warmup_linear(step, total_steps, warmup_steps))
