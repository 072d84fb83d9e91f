"""VOLTA-style poolers and product fusion (docs/method.md §4).

Every model in the library, single- or dual-stream, ends with these, so heads see the same vectors.
"""

from __future__ import annotations

from torch import Tensor, nn


class Pooler(nn.Module):
    """ReLU(Linear(D -> P)) of one token: [CLS] for text, the IMG token for regions.

    Note: VOLTA uses ReLU and a 1024-wide pooler, not BERT's tanh D->D pooler, so BERT's pooler
    weights are not loaded.
    """

    def __init__(self, hidden_size: int, pooler_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, pooler_size)
        self.act = nn.ReLU()

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
