"""The post-LN BERT layer with multi-mode attention (paper §2.3, docs/method.md §3).

Dimension legend
    B batch size, N = T + R tokens, D hidden size, F FFN size

One set of weights serves both modalities, as in a single-stream BERT. The layer also returns its
state after the attention sub-layer (``mid``), which the Switch-Input Block offers to the next layer.

Parameter names (``attention.{query,key,value,output}``, ``attention_norm``, ``ffn.{up,down}``,
``ffn_norm``) are part of the saved format; ``weights/keymaps.py`` (``SWITCH_LAYER_*``) maps them onto
the sub-layer vocabulary the dual-stream blocks and the BERT / VOLTA / HF key maps use.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from switchbert.layers.attention import MultiModeAttention


class FeedForward(nn.Module):
    """BERT's FFN: Linear(D->F), GELU, Linear(F->D)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, intermediate_size)
        self.act = nn.GELU()
        self.down = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.act(self.up(x)))


class SwitchLayer(nn.Module):
    """Post-LN transformer layer: x -> LN(x + Attn(x)) = mid -> LN(mid + FFN(mid)) = out.

    Args:
        hidden_size: D.
        num_heads: attention heads.
        intermediate_size: F.
        hidden_dropout: dropout after attention and FFN outputs.
        attention_dropout: dropout on attention probabilities.
        layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_dropout: float,
        attention_dropout: float,
        layer_norm_eps: float,
    ) -> None:
        super().__init__()
        self.attention = MultiModeAttention(hidden_size, num_heads, attention_dropout)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.ffn = FeedForward(hidden_size, intermediate_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(
        self, x: Tensor, key_valid: Tensor, num_text: int, mode_weights: Optional[Tensor], hard: bool, impl: str
    ) -> tuple[Tensor, Tensor]:
        """Args:
            x: (B, N, D).
            key_valid: (B, N) bool.
            num_text: T.
            mode_weights: (B, 4) over (SS, SC, CS, J), or None for plain joint attention.
            hard: one-hot constant weights (masked SDPA path).
            impl: "fused", "sdpa", "flex" or "reference" (config.ATTENTION_IMPLS).

        Returns:
            mid: (B, N, D) state after the attention sub-layer; out: (B, N, D) layer output.
        """
        attn = self.attention(x, key_valid, num_text, mode_weights, hard, impl)
        mid = self.attention_norm(x + self.dropout(attn))
        out = self.ffn_norm(mid + self.dropout(self.ffn(mid)))
        return mid, out
