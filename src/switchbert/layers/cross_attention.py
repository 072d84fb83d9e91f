"""Post-LN attention and FFN sub-layers for the dual-stream baselines (LXMERT, ViLBERT; docs/method.md §5).

Dimension legend
    B batch size, L query tokens, S context (key/value) tokens
    Dq query-stream width, Dc context-stream width, H heads, F FFN size

A sub-layer is one of BERT's two halves with its residual and LayerNorm. Queries come from one
stream and keys/values from a context stream (itself for self-attention, the other modality for
cross-attention), which is all a dual-stream model needs. Parameter names (``query``, ``key``,
``value``, ``output``, ``norm``; ``up``, ``down``, ``norm``) map one-to-one onto BERT's and VOLTA's
(the maps: ``switchbert.weights.keymaps``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class AttentionBlock(nn.Module):
    """LN(x + dropout(O(softmax(Q(x) K(c)^T / sqrt(hd)) V(c)))), with c = context.

    Args:
        query_dim: Dq, the width of the stream that asks (and of the output).
        context_dim: Dc, the width of the stream attended to.
        num_heads: H; Dq must be divisible by it.
        attention_dropout: dropout on the attention probabilities.
        hidden_dropout: dropout on the output projection.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, query_dim: int, context_dim: int, num_heads: int, attention_dropout: float,
                 hidden_dropout: float, layer_norm_eps: float) -> None:
        super().__init__()
        if query_dim % num_heads:
            raise ValueError(f"AttentionBlock: query_dim {query_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(query_dim, query_dim)
        self.key = nn.Linear(context_dim, query_dim)
        self.value = nn.Linear(context_dim, query_dim)
        self.output = nn.Linear(query_dim, query_dim)
        self.norm = nn.LayerNorm(query_dim, eps=layer_norm_eps)
        self.attention_dropout = attention_dropout
        self.dropout = nn.Dropout(hidden_dropout)

    def _heads(self, x: Tensor) -> Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.num_heads, D // self.num_heads).transpose(1, 2)  # (B, H, L, hd)

    def forward(self, x: Tensor, context: Tensor, context_valid: Tensor) -> Tensor:
        """Args:
            x: (B, L, Dq) queries (and the residual).
            context: (B, S, Dc) keys and values.
            context_valid: (B, S) bool, True = a real context token.

        Returns:
            (B, L, Dq).
        """
        B, L, D = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(context)), self._heads(self.value(context))
        # A sample whose context is empty (no image at all) would give an all-masked softmax (NaN):
        # let it attend anywhere, then zero its result, so it receives no context and stays finite.
        has_any = context_valid.any(dim=-1)  # (B,)
        mask = (context_valid | ~has_any[:, None])[:, None, None, :]  # (B, 1, 1, S)
        p = self.attention_dropout if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, hd)
        ctx = ctx * has_any.to(ctx.dtype)[:, None, None, None]
        out = self.output(ctx.transpose(1, 2).reshape(B, L, D))
        return self.norm(x + self.dropout(out))


class FFNBlock(nn.Module):
    """LN(x + dropout(down(GELU(up(x))))), BERT's second half.

    Args:
        dim: stream width.
        intermediate_size: F.
        hidden_dropout: dropout on the output.
        layer_norm_eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, intermediate_size: int, hidden_dropout: float, layer_norm_eps: float) -> None:
        super().__init__()
        self.up = nn.Linear(dim, intermediate_size)
        self.act = nn.GELU()  # exact (erf) GELU, as BERT, VOLTA and HF
        self.down = nn.Linear(intermediate_size, dim)
        self.norm = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, dim) -> (B, L, dim)."""
        return self.norm(x + self.dropout(self.down(self.act(self.up(x)))))


class StreamLayer(nn.Module):
    """A BERT layer over one modality: self-attention sub-layer, then FFN sub-layer."""

    def __init__(self, dim: int, num_heads: int, intermediate_size: int, attention_dropout: float,
                 hidden_dropout: float, layer_norm_eps: float) -> None:
        super().__init__()
        self.attn = AttentionBlock(dim, dim, num_heads, attention_dropout, hidden_dropout, layer_norm_eps)
        self.ffn = FFNBlock(dim, intermediate_size, hidden_dropout, layer_norm_eps)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """x: (B, L, dim), valid: (B, L) bool -> (B, L, dim)."""
        return self.ffn(self.attn(x, x, valid))

