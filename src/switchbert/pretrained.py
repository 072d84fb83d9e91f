"""Saving and loading model directories: ``config.json`` + ``model.safetensors``.

A directory written by ``save_pretrained`` loads with ``load_pretrained`` into an identical model.
A directory whose weights do not fit its config fails with a message naming each offending tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from switchbert.config import ModelConfig
from switchbert.io import atomic_write, atomic_write_json
from switchbert.models import build_model
from switchbert.models.base import VLModel

FORMAT = "switchbert/1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model: VLModel, directory: str | Path) -> Path:
    """Writes the model's config and weights; each file is replaced atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage; clone so tied or aliased tensors save as plain copies.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    atomic_write_json(directory / CONFIG_NAME, {"format": FORMAT, "config": model.config.to_dict()})
    return directory


def read_config(directory: str | Path) -> ModelConfig:
    """The ``ModelConfig`` stored in a model directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json; is {directory} a switchbert model directory?")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if raw.get("format") != FORMAT or "config" not in raw:
        raise ValueError(f"{path}: not a switchbert model config (expected format {FORMAT!r})")
    try:
        return ModelConfig.from_dict(raw["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu", **overrides: Any) -> VLModel:
    """Builds the model described by ``directory/config.json`` and loads its weights.

    Args:
        directory: written by ``save_pretrained``.
        map_location: device for the weights.
        overrides: runtime config fields to change (e.g. ``attention_impl="reference"``); changing an
            architecture field makes the weights not fit, which is reported.

    Raises:
        ValueError: a missing, unexpected or wrongly shaped tensor, each named.
    """
    directory = Path(directory)
    config = read_config(directory)
    if overrides:
        config = config.replace(**overrides)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: no weights file")
    state = load_file(str(weights_path), device=str(map_location))
    model = build_model(config)
    check_state_dict(model, state, source=str(weights_path))
    model.load_state_dict(state, strict=True)
    return model


def check_state_dict(model: VLModel, state: dict[str, torch.Tensor], source: str) -> None:
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
        lines = [f"{source} does not match its config ({model.config.name}, arch={model.config.arch}):"]
        if wrong:
            lines.append(f"  wrong shape ({len(wrong)}): " + "; ".join(wrong[:10]))
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing[:10]))
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): " + ", ".join(unexpected[:10]))
        raise ValueError("\n".join(lines))
