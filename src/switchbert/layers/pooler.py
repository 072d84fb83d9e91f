"""VOLTA-style poolers and product fusion (docs/method.md §4), or BERT's pooler (``ModelConfig.pooler``).

Every model in the library, single- or dual-stream, ends with these, so heads see the same vectors.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn


class Pooler(nn.Module):
    """ReLU(Linear(D -> P)) of one token: [CLS] for text, the IMG token for regions; with ``tanh``,
    BERT's pooler (D -> D).

    Note: VOLTA uses ReLU and a 1024-wide pooler, not BERT's tanh D->D pooler, so BERT's pooler
    weights are not loaded into a "volta" pooler.
    """

    def __init__(self, hidden_size: int, pooler_size: int, tanh: bool = False) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, pooler_size)
        self.act = nn.Tanh() if tanh else nn.ReLU()

    def forward(self, first_token: Tensor) -> Tensor:
        """(B, D) -> (B, P)."""
        return self.act(self.dense(first_token))


class ProductFusion(nn.Module):
    """fused = dropout(pooled_text * pooled_region) (docs/method.md §4)."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, pooled_text: Tensor, pooled_region: Tensor) -> Tensor:
        """(B, P), (B, P) -> (B, P)."""
        return self.dropout(pooled_text * pooled_region)


class TextFusion(nn.Module):
    """pooled = dropout(pooled_text): BERT's pooling, [CLS] alone (``ModelConfig.pooler = "bert"``)."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)

    def forward(self, pooled_text: Tensor, pooled_region: Optional[Tensor] = None) -> Tensor:
        """(B, D) -> (B, D)."""
        return self.dropout(pooled_text)


def build_poolers(config, text_size: int, region_size: int) -> tuple[Pooler, Optional[Pooler], nn.Module]:
    """(text pooler, region pooler or None, fusion) for ``config.pooler``."""
    if config.pooler == "bert":
        return Pooler(text_size, text_size, tanh=True), None, TextFusion(config.fusion_dropout)
    return (Pooler(text_size, config.pooler_size), Pooler(region_size, config.pooler_size),
            ProductFusion(config.fusion_dropout))
