"""The on-disk model directory: ``config.json`` + ``model.safetensors`` + a short ``README.md`` card.

A training checkpoint (``train/checkpoint.py``) is a model directory plus ``heads.safetensors`` (the
task's heads; ``import-checkpoint --from volta`` writes it too), the trainer state and a ``.complete``
marker; a run directory holds checkpoints ``best/`` and ``last/``. ``resolve_checkpoint`` turns any of
the three into the model directory to read.

This module knows the files and nothing about model classes, so ``models/base.py`` can both write and
read a directory without importing the loader that builds models (``models/build.load_pretrained``).

``config.json`` keeps our own format marker and config, plus the two keys tools of the HF ecosystem
look for first (``model_type`` and ``architectures``). They are informative only: the weights use our
parameter names, so ``transformers`` cannot load the directory, and we never read those keys back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from switchbert.config import ModelConfig
from switchbert.io import atomic_write, atomic_write_json, atomic_write_text

FORMAT = "switchbert/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HEADS_NAME = "heads.safetensors"
COMPLETE_NAME = ".complete"
MODEL_TYPE = "switchbert"


@dataclass(frozen=True)
class TrainingInfo:
    """What the model card says about how a model was trained, when the writer knows it.

    Attributes:
        task: "pretrain", "vqa", "retrieval", "refexp", or a description such as "imported from VOLTA".
        data: the training data, in words or as paths.
        steps: optimizer steps taken so far.
        epochs: epochs completed (may be fractional when a run stops inside one).
        extra: further lines for the card, in order.
    """

    task: str = ""
    data: str = ""
    steps: Optional[int] = None
    epochs: Optional[float] = None
    extra: tuple[str, ...] = field(default_factory=tuple)


def write_model_dir(model: nn.Module, config: ModelConfig, directory: str | Path,
                    training: Optional[TrainingInfo] = None) -> Path:
    """Writes config, weights and card to ``directory``; each file is replaced atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage; clone so tied or aliased tensors save as plain copies.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    atomic_write_json(directory / CONFIG_NAME, {
        "format": FORMAT,
        "model_type": MODEL_TYPE,
        "architectures": [type(model).__name__],
        "config": config.to_dict(),
    })
    num_params = sum(p.numel() for p in model.parameters())
    atomic_write_text(directory / CARD_NAME, model_card(config, type(model).__name__, num_params, training))
    return directory


def model_card(config: ModelConfig, architecture: str, num_params: int,
               training: Optional[TrainingInfo] = None) -> str:
    """A short README.md: what the model is and, when known, what it was trained on and for how long."""
    modes = ", ".join(config.sab_modes)
    lines = [
        f"# {config.name}",
        "",
        f"A switchbert model directory ({architecture}, arch `{config.arch}`, embedding `{config.embedding}`).",
        "",
        f"- preset / name: `{config.name}`",
        f"- parameters: {num_params:,} (encoder, without task or pretraining heads)",
        f"- size: {config.num_layers} layers, hidden {config.hidden_size}, {config.num_heads} heads",
    ]
    if config.arch == "switchbert":
        lines.append(f"- attention modes: {modes}; switch-input block: {config.sib or 'none'}")
    if training is None:
        lines.append("- training: not recorded (saved outside a training run)")
    else:
        if training.task:
            lines.append(f"- trained for: {training.task}")
        if training.data:
            lines.append(f"- training data: {training.data}")
        if training.steps is not None:
            epochs = (f" ({training.epochs:g} epoch{'' if training.epochs == 1 else 's'})"
                      if training.epochs is not None else "")
            lines.append(f"- training length: {training.steps:,} optimizer steps{epochs}")
        lines.extend(f"- {line}" for line in training.extra)
    lines += [
        "",
        "Load it with `switchbert.load_pretrained(DIR)` (returns the model in eval mode). The weights use",
        "switchbert's parameter names; `model_type` in config.json is informative, `transformers` cannot",
        "load this directory.",
        "",
    ]
    return "\n".join(lines)


def read_config(directory: str | Path) -> ModelConfig:
    """The ``ModelConfig`` stored in a model directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json; is {directory} a switchbert model directory?")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or "config" not in raw:
        raise ValueError(f"{path}: not a switchbert model config (expected format {FORMAT!r})")
    try:
        return ModelConfig.from_dict(raw["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def read_weights(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in ``directory/model.safetensors`` (safetensors: loading cannot run code)."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no weights file")
    return load_file(str(path), device=str(map_location))


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raises a ``ValueError`` listing every key that is missing, unexpected or of the wrong shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: config expects {tuple(expected[k].shape)}, file has {tuple(state[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if tuple(expected[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or wrong:
        config = getattr(model, "config", None)
        what = f" ({config.name}, arch={config.arch})" if isinstance(config, ModelConfig) else ""
        lines = [f"{source} does not match its config{what}:"]
        if wrong:
            lines.append(f"  wrong shape ({len(wrong)}): " + "; ".join(wrong[:10]))
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing[:10]))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected[:10]))
        raise ValueError("\n".join(lines))


def is_complete(directory: str | Path) -> bool:
    """A directory ``train.checkpoint.write_dir_atomically`` finished writing (its ``.complete`` marker exists)."""
    return (Path(directory) / COMPLETE_NAME).is_file()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from a run directory (``best/``, else ``last/``) or a checkpoint itself.

    Recovers ``.old-<name>`` when a crash happened between the two renames of an atomic write.
    """
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    for name in ("best", "last"):
        # Read-only: a complete temporary copy or .old-<name> left by a kill (recover_dir repairs them).
        tmps = sorted((t for t in path.glob(f".tmp-{name}-*") if is_complete(t)), key=lambda t: t.stat().st_mtime)
        for candidate in (path / name, *reversed(tmps), path / f".old-{name}"):
            if (candidate / CONFIG_NAME).is_file():
                return candidate
    raise FileNotFoundError(f"{path}: no checkpoint (neither a model directory nor a run with best/ or last/)")


def write_heads(heads: nn.Module, directory: str | Path) -> Path:
    """``directory/heads.safetensors``, replaced atomically; ``load_heads`` reads it back."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in heads.state_dict().items()}
    path = Path(directory) / HEADS_NAME
    atomic_write(path, lambda tmp: save_file(state, tmp))
    return path


def load_heads(heads: nn.Module, directory: str | Path) -> None:
    """Loads ``heads.safetensors``; a missing or misshapen tensor is a ValueError naming it."""
    path = Path(directory) / HEADS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the checkpoint has no task heads")
    state = load_file(str(path))
    expected = heads.state_dict()
    problems = [k for k in expected if k not in state or tuple(state[k].shape) != tuple(expected[k].shape)]
    problems += [k for k in state if k not in expected]
    if problems:
        detail = ", ".join(
            f"{k} (file {tuple(state[k].shape) if k in state else 'missing'}, "
            f"heads {tuple(expected[k].shape) if k in expected else 'none'})" for k in problems[:6])
        raise ValueError(f"{path} does not fit this task's heads: {detail}")
    heads.load_state_dict(state)
