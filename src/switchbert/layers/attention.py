"""Multi-mode attention: the four SAB modes from one set of weights and one score computation.

Dimension legend
    B  batch size, H heads, N = T + R tokens (text first, then regions), D hidden, hd = D / H
    M  the four modes, in the order of ``config.MODES``: SS, SC, CS, J (paper Table 1)

Every mode attends with the same Q, K, V; modes differ only in which key block (text or regions) a
query may see. Joint attention is a convex mix of attention over each block:
with s and c the log-sum-exp of a query's scores over text and region keys,
    O_joint = sigma(s - c) * O_text_keys + sigma(c - s) * O_region_keys.
So any per-sample mixture of the four modes is, per query, a mix of the two block-wise softmaxes with
weights alpha_text, alpha_region (SPEC §3.1 cost note). ``fused`` computes one score matrix and one
P @ V with a hand-written backward (``block_attention.py``); ``sdpa`` mixes three SDPA calls (joint and
one per key block) and never forms the score matrix; ``reference`` runs each mode as its own masked
attention and mixes the outputs with autograd (kept for tests).
For hard routes (inference, or a fixed mode) the mixture is a plain masked attention, run by SDPA.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from switchbert.config import MODES
from switchbert.layers.block_attention import accumulation_dtype, block_mixed_attention, split_mixed_attention


def block_constants(w: Tensor, is_text_query: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Splits a mode mixture into fixed block weights and the joint weight.

    Args:
        w: (B, 4) weights over (SS, SC, CS, J).
        is_text_query: (N,) bool.

    Returns:
        c_text, c_region: (B, N) weight each query puts on the text / region key block from the
            non-joint modes; w_joint: (B, 1) weight of the joint mode.
    """
    ss, sc, cs, j = w.unbind(dim=-1)
    q_text = is_text_query.unsqueeze(0)
    # Text queries: SS, SC see text; CS sees regions. Region queries: SC sees text; SS, CS see regions.
    c_text = torch.where(q_text, (ss + sc).unsqueeze(-1), sc.unsqueeze(-1))
    c_region = torch.where(q_text, cs.unsqueeze(-1), (ss + cs).unsqueeze(-1))
    return c_text, c_region, j.unsqueeze(-1)


def mode_mask(mode: str, num_text: int, num_tokens: int, device: torch.device) -> Tensor:
    """(N, N) bool: which keys each query may see in one mode (paper Table 1)."""
    is_text = torch.arange(num_tokens, device=device) < num_text
    same = is_text[:, None] == is_text[None, :]
    if mode == "SS":
        return same
    if mode == "SC":  # text -> text, regions -> text
        return is_text[None, :].expand(num_tokens, num_tokens)
    if mode == "CS":  # text -> regions, regions -> regions
        return (~is_text)[None, :].expand(num_tokens, num_tokens)
    if mode == "J":
        return torch.ones(num_tokens, num_tokens, dtype=torch.bool, device=device)
    raise ValueError(f"unknown mode {mode!r}")


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over allowed keys; a row with no allowed key gives zeros (and finite gradients)."""
    empty = ~mask.any(dim=-1, keepdim=True)
    s = scores.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    return torch.softmax(s, dim=-1).masked_fill(~mask, 0.0)


def hard_route_mask(key_valid: Tensor, num_text: int, w: Tensor) -> Tensor:
    """Boolean attention mask of a one-hot route: (B, 1, N, N).

    A query may see a key block when its fixed weight or the joint weight is non-zero. Rows left
    with no valid key (region queries in SS for a sample without image) may see themselves, so SDPA
    never meets an all-masked row; those positions are masked everywhere downstream.
    """
    N = key_valid.shape[-1]
    is_text = torch.arange(N, device=key_valid.device) < num_text
    c_text, c_region, w_joint = block_constants(w, is_text)
    see_text = (c_text > 0) | (w_joint > 0)  # (B, N) over queries
    see_region = (c_region > 0) | (w_joint > 0)
    allowed = torch.where(is_text.view(1, 1, N), see_text.unsqueeze(-1), see_region.unsqueeze(-1))
    allowed = allowed & key_valid[:, None, :]
    empty = ~allowed.any(dim=-1, keepdim=True)
    eye = torch.eye(N, dtype=torch.bool, device=key_valid.device).unsqueeze(0)
    return (allowed | (empty & eye)).unsqueeze(1)


def expand_mode_weights(w: Tensor, modes: tuple[str, ...]) -> Tensor:
    """(B, M') weights over the configured ``modes`` -> (B, 4) over all of ``MODES``."""
    if modes == MODES:
        return w
    full = w.new_zeros(w.shape[0], len(MODES))
    index = torch.tensor([MODES.index(m) for m in modes], device=w.device)
    return full.index_copy(1, index, w)


class MultiModeAttention(nn.Module):
    """Multi-head attention whose pattern is a per-sample mixture of the SAB modes.

    One set of Q/K/V/output weights serves every mode and both modalities (paper §2.3.1).

    Args:
        hidden_size: D.
        num_heads: H.
        dropout: attention-probability dropout.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        B, N, _ = x.shape
        return x.view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, hd)

    def forward(
        self,
        x: Tensor,
        key_valid: Tensor,
        num_text: int,
        mode_weights: Optional[Tensor],
        hard: bool,
        impl: str = "fused",
    ) -> Tensor:
        """Args:
            x: (B, N, D) text then region states.
            key_valid: (B, N) bool.
            num_text: T.
            mode_weights: (B, 4) over (SS, SC, CS, J); None = plain joint attention (a fixed J layer),
                which needs only a key-padding mask.
            hard: the weights are one-hot constants (inference, fixed mode): use a masked SDPA.
            impl: "fused" (one score matrix, hand-written backward), "sdpa" (three SDPA calls: joint and
                one per key block) or "reference" (one masked attention per mode, autograd).

        Returns:
            (B, N, D) after the output projection.
        """
        B, N, D = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        p_drop = self.dropout if self.training else 0.0
        if mode_weights is None and impl != "reference":
            # A (B, 1, 1, N) padding mask instead of a per-query one: SDPA's cheaper path.
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :], dropout_p=p_drop)
        elif impl == "reference":
            if mode_weights is None:
                mode_weights = F.one_hot(torch.full((B,), MODES.index("J"), device=x.device), len(MODES)).to(q.dtype)
            ctx = self._reference(q, k, v, key_valid, num_text, mode_weights, p_drop)
        elif hard:
            mask = hard_route_mask(key_valid, num_text, mode_weights)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
        else:
            is_text = torch.arange(N, device=x.device) < num_text
            # The mode sums (e.g. SS + SC) in the softmax statistics' precision, not the switcher's.
            c_text, c_region, w_joint = block_constants(mode_weights.to(accumulation_dtype(q)), is_text)
            c_blocks = torch.stack([c_text, c_region], dim=-1)  # (B, N, 2)
            mix = split_mixed_attention if impl == "sdpa" else block_mixed_attention
            ctx = mix(q, k, v, key_valid, num_text, c_blocks, w_joint.expand(B, N), p_drop)
        return self.output(ctx.transpose(1, 2).reshape(B, N, D))

    def _reference(
        self, q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor, num_text: int, w: Tensor, p_drop: float
    ) -> Tensor:
        """Each mode as its own masked attention pass, outputs mixed per sample (the naive way)."""
        N = q.shape[2]
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))
        out = torch.zeros_like(q)
        for m, mode in enumerate(MODES):
            weight = w[:, m]
            if not bool((weight != 0).any()):
                continue
            mask = mode_mask(mode, num_text, N, q.device)[None, None] & key_valid[:, None, None, :]
            probs = F.dropout(masked_softmax(scores, mask), p_drop, self.training)
            out = out + weight.to(q.dtype).view(-1, 1, 1, 1) * (probs @ v)
        return out
