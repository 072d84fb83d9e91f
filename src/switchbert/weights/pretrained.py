"""Loading a model directory without knowing its class: ``load_pretrained`` (HF's ``AutoModel`` role).

A directory holds ``config.json``, ``model.safetensors`` and a ``README.md`` card; ``models/directory.py``
reads and writes those files, and ``VLModel.save_pretrained`` / ``VLModel.from_pretrained`` use it. This
module only adds the step that needs every model class: building the class the stored config names.
A directory whose weights do not fit its config fails with a message naming each offending tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from switchbert.models import MODEL_CLASSES, VLModel
from switchbert.models.directory import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    TrainingInfo,
    check_state_dict,
    read_config,
)

__all__ = ["CARD_NAME", "CONFIG_NAME", "WEIGHTS_NAME", "TrainingInfo", "check_state_dict", "load_pretrained",
           "read_config", "save_pretrained"]


def save_pretrained(model: VLModel, directory: str | Path, training: Optional[TrainingInfo] = None) -> Path:
    """``model.save_pretrained(directory, training)``, as a function."""
    return model.save_pretrained(directory, training)


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu", **overrides: Any) -> VLModel:
    """Builds the model described by ``directory/config.json``, loads its weights, returns it in eval mode.

    Eval mode (as HF's ``from_pretrained``): dropout off and hard, deterministic routes, so two calls on
    the same batch agree. Call ``model.train()`` to fine-tune.

    Args:
        directory: written by ``save_pretrained``.
        map_location: device for the weights.
        overrides: runtime config fields to change (e.g. ``attention_impl="reference"``); changing an
            architecture field makes the weights not fit, which is reported.

    Raises:
        ValueError: a missing, unexpected or wrongly shaped tensor, each named.
    """
    arch = read_config(directory).arch
    try:
        cls = MODEL_CLASSES[arch]
    except KeyError:
        raise ValueError(f"{Path(directory) / CONFIG_NAME}: arch={arch!r} has no model class; "
                         f"known: {sorted(MODEL_CLASSES)}") from None
    return cls.from_pretrained(directory, map_location, **overrides)
