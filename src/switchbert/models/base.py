"""What every model in the library shares: its config, weight init, temperature, saving."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from switchbert.config import ModelConfig
from switchbert.layers.switcher import Switcher


class VLModel(nn.Module):
    """Base class: takes a ``Batch``, returns an ``EncoderOutput`` (see outputs.py).

    Subclasses build their modules in ``__init__`` and then call ``self.init_weights()``.
    """

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
        """The (V, D) word embedding the MLM decoder ties to (SPEC §6).

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
        """Our parameter name -> BERT parameter name for BERT initialisation (see bert_init.py)."""
        raise NotImplementedError(f"{type(self).__name__} does not define a BERT key map")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes ``config.json`` and ``model.safetensors`` to ``directory`` (atomically per file)."""
        from switchbert.pretrained import save_pretrained

        return save_pretrained(self, directory)
