"""Model families by ``ModelConfig.arch``: an explicit dict, no registration side effects."""

from __future__ import annotations

from switchbert.config import ModelConfig
from switchbert.models.base import VLModel
from switchbert.models.lxmert import LxmertModel
from switchbert.models.switchbert import SwitchBertModel
from switchbert.models.vilbert import ViLBertModel

MODEL_CLASSES: dict[str, type[VLModel]] = {
    # Single stream: Switch-BERT, and with one mode and no SIB, UNITER / VisualBERT / VL-BERT.
    "switchbert": SwitchBertModel,
    # Dual stream baselines (docs/method.md §5).
    "lxmert": LxmertModel,
    "vilbert": ViLBertModel,
}


def build_model(config: ModelConfig) -> VLModel:
    """A freshly initialised model for ``config``."""
    try:
        cls = MODEL_CLASSES[config.arch]
    except KeyError:
        raise ValueError(f"ModelConfig.arch={config.arch!r} has no model class; known: {sorted(MODEL_CLASSES)}") from None
    return cls(config)


__all__ = ["MODEL_CLASSES", "LxmertModel", "SwitchBertModel", "ViLBertModel", "VLModel", "build_model"]
