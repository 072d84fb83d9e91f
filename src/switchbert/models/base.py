"""What every model in the library shares: its config, weight init, temperature, saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, TypeVar

import torch
from torch import nn

from switchbert.config import ModelConfig
from switchbert.layers.switcher import Switcher
from switchbert.models.directory import (TrainingInfo, check_state_dict, read_config, read_weights, resolve_checkpoint,
                                         write_model_dir)

M = TypeVar("M", bound="VLModel")


class VLModel(nn.Module):
    """Base class: takes a ``Batch``, returns an ``EncoderOutput`` (see outputs.py).

    Subclasses build their modules in ``__init__`` and then call ``self.init_weights()``.
    """

    ARCH: str = ""
    """The ``ModelConfig.arch`` a concrete class builds (``models.MODEL_CLASSES`` maps it back)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorms; switchers start
        near uniform."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, Switcher):
                module.reset_output_layer()

    def switchers(self) -> list[Switcher]:
        return [m for m in self.modules() if isinstance(m, Switcher)]

    def set_temperature(self, tau: float) -> None:
        """Sets the Gumbel-softmax temperature of every switcher (see temperature.py)."""
        if not tau > 0:
            raise ValueError(f"temperature must be > 0, got {tau}")
        for s in self.switchers():
            s.tau.fill_(float(tau))

    def get_word_embeddings(self) -> nn.Embedding:
        """The (V, D) word embedding the MLM decoder ties to (docs/method.md §6).

        Every model in the library keeps it at ``embeddings.text.word_embeddings``; a model that
        stores it elsewhere overrides this method.
        """
        text = getattr(getattr(self, "embeddings", None), "text", None)
        emb = getattr(text, "word_embeddings", None)
        if not isinstance(emb, nn.Embedding):
            raise AttributeError(f"{type(self).__name__} has no embeddings.text.word_embeddings; "
                                 "override get_word_embeddings()")
        return emb

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def bert_key_map(self, num_bert_layers: int) -> dict[str, str]:
        """Our parameter name -> BERT parameter name for BERT initialisation (see weights/bert.py)."""
        raise NotImplementedError(f"{type(self).__name__} does not define a BERT key map")

    def save_pretrained(self, directory: str | Path, training: Optional[TrainingInfo] = None) -> Path:
        """Writes ``config.json``, ``model.safetensors`` and a ``README.md`` card (each atomically).

        Args:
            training: what the card says about how the model was trained (the trainer passes it).
        """
        return write_model_dir(self, self.config, directory, training)

    @classmethod
    def from_pretrained(cls: type[M], directory: str | Path, map_location: str | torch.device = "cpu",
                        **overrides: Any) -> M:
        """Loads a directory written by ``save_pretrained`` into this class, in eval mode (as HF does).

        ``directory`` may also be a training checkpoint or a run directory (``models.resolve_checkpoint``).
        ``switchbert.load_pretrained`` picks the class from the stored config; this classmethod checks
        that the stored model is of this class. ``overrides`` change runtime fields
        (e.g. ``attention_impl="reference"``); an architecture field that no longer fits the weights
        is reported tensor by tensor.
        """
        if cls is VLModel:
            raise TypeError("VLModel is abstract: call switchbert.load_pretrained(directory), which picks "
                            "the class from config.json, or a concrete class such as SwitchBertModel")
        directory = resolve_checkpoint(directory)
        config = read_config(directory)
        if config.arch != cls.ARCH:
            raise ValueError(f"{directory} holds an arch={config.arch!r} model; {cls.__name__} loads "
                             f"arch={cls.ARCH!r}. switchbert.load_pretrained picks the class for you.")
        if overrides:
            config = config.replace(**overrides)
        model = cls(config)
        state = read_weights(directory, map_location)
        source = str(Path(directory) / "model.safetensors")
        check_state_dict(model, state, source=source)
        model.load_state_dict(state, strict=True)
        return model.eval()
