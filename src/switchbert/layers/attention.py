"""Multi-mode attention: the four SAB modes from one set of weights and one score computation.

Dimension legend
    B  batch size, H heads, N = T + R tokens (text first, then regions), D hidden, hd = D / H
    M  the four modes, in the order of ``config.MODES``: SS, SC, CS, J (paper Table 1)

Every mode attends with the same Q, K, V; modes differ only in which key block (text or regions) a
query may see. Joint attention is a convex mix of attention over each block:
with s and c the log-sum-exp of a query's scores over text and region keys,
    O_joint = sigma(s - c) * O_text_keys + sigma(c - s) * O_region_keys.
So any per-sample mixture of the four modes is, per query, a mix of the two block-wise softmaxes with
weights alpha_text, alpha_region (docs/method.md §3.1, "How the modes are computed"). ``fused`` computes one score matrix and one
P @ V with a hand-written backward (``block_attention.py``); ``sdpa`` mixes three SDPA calls (joint and
one per key block) and never forms the score matrix; ``flex`` runs one attention per key block that
returns its log-sum-exp and merges them (``lse_attention.py``: FlexAttention on CUDA under
torch.compile); ``reference`` runs each mode as its own masked attention and mixes the outputs with
autograd (kept for tests).
For hard routes (inference, or a fixed mode) the mixture is a plain masked attention, run by SDPA.

Queries with no key: a mode can leave a query no valid key (text queries in CS, or region queries in
SS/CS, of a text-only sample whose regions are all masked). Every path, soft and hard, gives such a
query a zero attention output from that mode: the mode's mass is dropped and the token keeps its
residual state [ours: the paper does not say; attending to itself instead would make evaluation
differ from training]. In a soft mixture the other modes' terms are unchanged.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from switchbert.config import MODES
from switchbert.layers.block_attention import accumulation_dtype, block_mixed_attention, split_mixed_attention
from switchbert.layers.lse_attention import lse_mixed_attention


# Paper Table 1 as mixture weights: for each mode (rows SS, SC, CS, J) and query modality (text,
# regions), the weight a query puts on [softmax over its text keys, softmax over its region keys,
# joint softmax over all keys].
MODE_BLOCK_WEIGHTS = torch.tensor([
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # SS: text -> text, regions -> regions
    [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],  # SC: text -> text, regions -> text
    [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]],  # CS: text -> regions, regions -> regions
    [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],  # J: everything
])


def mixture_coefficients(w: Tensor, num_text: int, num_tokens: int, table: Optional[Tensor] = None) -> Tensor:
    """Turns a per-sample mode mixture into per-query softmax weights.

    Args:
        w: (B, 4) weights over (SS, SC, CS, J).
        num_text: T; queries < T are text.
        num_tokens: N.
        table: ``MODE_BLOCK_WEIGHTS`` already on w's device (a module buffer: no host-to-device copy in
            the step); None copies it here.

    Returns:
        (B, N, 3): the weight each query puts on [text-key softmax, region-key softmax, joint softmax].
    """
    table = (MODE_BLOCK_WEIGHTS if table is None else table).to(device=w.device, dtype=w.dtype)
    # Table 1 per token, (4, N, 3), a constant; then a product and a sum over the modes (not a matmul,
    # which the FLOPs analysis would have to count: analysis/flops/count.py equals FlopCounterMode).
    is_region = torch.arange(num_tokens, device=w.device) >= num_text
    per_token = torch.where(is_region[None, :, None], table[:, 1:2], table[:, 0:1])
    return (w[:, :, None, None] * per_token).sum(dim=1)


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


def hard_route(key_valid: Tensor, num_text: int, w: Tensor, table: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Boolean attention mask of a one-hot route, and which queries have a key in it.

    A query may see a key block when its fixed weight or the joint weight is non-zero. Rows left
    with no valid key (text queries in CS for a sample without image) may see themselves, so SDPA
    never meets an all-masked row; ``MultiModeAttention`` then zeroes their output with ``has_key``
    (see "Queries with no key" above), so the self-key never shows.

    Returns:
        mask: (B, 1, N, N) bool; has_key: (B, 1, N, 1) bool, the query has a valid key in its route.
    """
    N = key_valid.shape[-1]
    is_text = torch.arange(N, device=key_valid.device) < num_text
    coef = mixture_coefficients(w, num_text, N, table)
    see_text = (coef[..., 0] > 0) | (coef[..., 2] > 0)  # (B, N) over queries
    see_region = (coef[..., 1] > 0) | (coef[..., 2] > 0)
    allowed = torch.where(is_text.view(1, 1, N), see_text.unsqueeze(-1), see_region.unsqueeze(-1))
    allowed = allowed & key_valid[:, None, :]
    has_key = allowed.any(dim=-1, keepdim=True)
    eye = torch.eye(N, dtype=torch.bool, device=key_valid.device).unsqueeze(0)
    return (allowed | (~has_key & eye)).unsqueeze(1), has_key.unsqueeze(1)


def hard_route_mask(key_valid: Tensor, num_text: int, w: Tensor, table: Optional[Tensor] = None) -> Tensor:
    """(B, 1, N, N) bool: ``hard_route``'s mask alone."""
    return hard_route(key_valid, num_text, w, table)[0]


def expand_mode_weights(w: Tensor, index: Tensor) -> Tensor:
    """(B, M') weights over a configured subset of modes -> (B, 4) over all of ``MODES``.

    ``index``: (M',) long, each configured mode's position in ``MODES`` (a module buffer, so the step
    copies nothing from the host).
    """
    return w.new_zeros(w.shape[0], len(MODES)).index_copy(1, index, w)


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
        self.register_buffer("mode_block_weights", MODE_BLOCK_WEIGHTS.clone(), persistent=False)

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
                one per key block), "flex" (one attention per key block with its log-sum-exp, merged) or
                "reference" (one masked attention per mode, autograd).

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
            mask, has_key = hard_route(key_valid, num_text, mode_weights, self.mode_block_weights)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)
            # Rows whose only allowed key is the self-key stand-in get no attention output.
            ctx = ctx * has_key.to(ctx.dtype)
        else:
            # The mode sums (e.g. SS + SC) in the softmax statistics' precision, not the switcher's.
            coef = mixture_coefficients(mode_weights.to(accumulation_dtype(q)), num_text, N, self.mode_block_weights)
            mix = {"sdpa": split_mixed_attention, "flex": lse_mixed_attention}.get(impl, block_mixed_attention)
            ctx = mix(q, k, v, key_valid, num_text, coef, p_drop)
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
