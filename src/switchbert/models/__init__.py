"""The models, and the one way to build them (``build_model``) or load a model directory (``load_pretrained``).

``build.py`` picks the class by ``ModelConfig.arch`` (``MODEL_CLASSES``); ``directory.py`` holds the
on-disk format (model directory, heads file, checkpoint resolution).
"""

from __future__ import annotations

from switchbert.models.base import VLModel
from switchbert.models.build import (MODEL_CLASSES, ExclusiveSourcesError, build_model, load_pretrained, model_class,
                                     save_pretrained)
from switchbert.models.directory import (HEADS_NAME, TrainingInfo, load_heads, resolve_checkpoint, write_heads)
from switchbert.models.lxmert import LxmertModel
from switchbert.models.switchbert import SwitchBertModel
from switchbert.models.vilbert import ViLBertModel

__all__ = ["HEADS_NAME", "MODEL_CLASSES", "ExclusiveSourcesError", "LxmertModel", "SwitchBertModel", "TrainingInfo",
           "ViLBertModel", "VLModel", "build_model", "load_heads", "load_pretrained", "model_class",
           "resolve_checkpoint", "save_pretrained", "write_heads"]
