"""Embedding variants by ``ModelConfig.embedding``: UNITER's (``common``) and the baselines' (``baselines``).

This package's ``__init__`` holds the registry, so neither module imports the other's users: ``baselines``
builds on ``common``, and nothing imports back.
"""

from __future__ import annotations

from torch import nn

from switchbert.config import ModelConfig
from switchbert.layers.embeddings.baselines import BASELINE_EMBEDDINGS
from switchbert.layers.embeddings.common import (
    IMG_BOX,
    TextEmbeddings,
    UniterEmbeddings,
    UniterRegionEmbeddings,
    add_img_token,
    region_token_mask,
)

EMBEDDINGS: dict[str, type[nn.Module]] = {"uniter": UniterEmbeddings, **BASELINE_EMBEDDINGS}
"""Embedding variants by ``config.embedding``."""


def build_embeddings(config: ModelConfig) -> nn.Module:
    """The embedding module ``config.embedding`` names."""
    try:
        cls = EMBEDDINGS[config.embedding]
    except KeyError:
        raise ValueError(
            f"ModelConfig.embedding={config.embedding!r} has no implementation; available: {sorted(EMBEDDINGS)}"
        ) from None
    return cls(config)


__all__ = ["EMBEDDINGS", "IMG_BOX", "TextEmbeddings", "UniterEmbeddings", "UniterRegionEmbeddings",
           "add_img_token", "build_embeddings", "region_token_mask"]
