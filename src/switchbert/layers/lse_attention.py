"""The soft SAB mixture from two attention calls, one per key block, merged by their log-sum-exp.

Dimension legend
    B batch size, H heads, N = T + R tokens (T text first, then R regions), hd head size

Every query attends once over its valid text keys and once over its valid region keys, giving
outputs O_text, O_region and log-sum-exps lse_text, lse_region of the scores. Joint attention over all
valid keys is their log-sum-exp-weighted mix (the flash-attention merge, docs/method.md §3.1):
    O_joint = s_text O_text + s_region O_region,  s_text = sigmoid(lse_text - lse_region) = 1 - s_region,
so the whole soft mixture of the four modes (``attention.mixture_coefficients``: c_text, c_region,
w_joint per query) is
    O = (c_text + w_joint s_text) O_text + (c_region + w_joint s_region) O_region.
The two calls together see each (query, key) pair once: one attention's FLOPs, as the ``fused`` path
(one score matrix) and about half of ``sdpa``'s (three SDPA calls). Unlike ``fused``, with FlexAttention
as the block kernel no (B, H, N, N) score matrix is stored. The gradient reaches the mode weights
through the coefficients, and the queries and keys also through the lse, so each block call must
return its lse *with* a gradient.

Two block kernels compute the same (O_b, lse_b):
  - ``flex``: ``torch.nn.attention.flex_attention`` over the block's keys with a key-padding block
    mask, asked for its lse. Used on CUDA under ``torch.compile`` only: in eager mode FlexAttention
    runs an unfused reference (a full score matrix per call), and on CPU it has no backward and its
    compiled CPU kernel returns no lse (torch 2.13).
  - ``math``: an explicit masked softmax over the block's keys, with autograd. Everywhere else,
    and the float64 reference for tests.

An empty block (the regions of a text-only sample) gives O_b = 0 and lse_b = -inf: its fixed weight's
mass is dropped and the joint term takes only the other block, the same rule as every other path
(``attention.py``, "Queries with no key").

Dropout [ours, departure]: FlexAttention cannot drop attention probabilities, so this path drops the
mixed output O (per element, rescaled by 1 / (1 - p)) instead of P. The expectation is the same,
E[dropout(P) V] = P V = E[dropout(P V)]; the noise is not (one mask over hd outputs per query and head
instead of one over its N keys). With ``attention_dropout = 0`` the path is exact.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from switchbert.layers.block_attention import accumulation_dtype


def math_block_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor) -> tuple[Tensor, Tensor]:
    """Attention of every query over one key block, with its log-sum-exp (autograd throughout).

    Args:
        q: (B, H, N, hd); k, v: (B, H, S, hd), the block's S keys.
        key_valid: (B, S) bool.

    Returns:
        out: (B, H, N, hd) in q's dtype, 0 for a sample whose block has no valid key;
        lse: (B, H, N) natural-log log-sum-exp of the scaled scores over the valid keys, in the
        accumulation dtype; -inf for an empty block (with a zero, not NaN, gradient path).
    """
    acc = accumulation_dtype(q)
    scores = torch.matmul(q, k.transpose(-1, -2)).to(acc) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    nonempty = key_valid.any(dim=-1)[:, None, None, None]  # (B, 1, 1, 1)
    # Finite stand-ins on empty rows, so neither the forward nor a gradient meets -inf - -inf.
    m = torch.where(nonempty, scores.amax(dim=-1, keepdim=True), 0.0).detach()
    e = torch.exp(scores - m)
    z = e.sum(dim=-1, keepdim=True)
    z_safe = torch.where(nonempty, z, 1.0)
    lse = torch.where(nonempty, m + torch.log(z_safe), float("-inf")).squeeze(-1)
    out = torch.matmul((e / z_safe).to(v.dtype), v)
    return out, lse


def flex_block_attention(q: Tensor, k: Tensor, v: Tensor, key_valid: Tensor) -> tuple[Tensor, Tensor]:
    """``math_block_attention`` by FlexAttention (a key-padding block mask, lse returned).

    Args and returns: as ``math_block_attention``; the lse is float32 for half inputs.
    """
    from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

    B, _, N, _ = q.shape
    S = k.shape[2]

    def key_is_valid(b, h, q_idx, kv_idx):
        return key_valid[b, kv_idx]

    block_mask = create_block_mask(key_is_valid, B, None, N, S, device=q.device)
    out, aux = flex_attention(q, k.contiguous(), v.contiguous(), block_mask=block_mask,
                              return_aux=AuxRequest(lse=True))
    return out, aux.lse.to(accumulation_dtype(q))


def use_flex(q: Tensor) -> bool:
    """FlexAttention runs fused (and with a backward) only on CUDA under torch.compile."""
    return q.is_cuda and torch.compiler.is_compiling()


def merge_blocks(
    o_text: Tensor, lse_text: Tensor, o_region: Tensor, lse_region: Tensor, coefs: Tensor,
    has_text: Tensor, has_region: Tensor,
) -> Tensor:
    """The soft mixture from the two blocks' outputs and log-sum-exps.

    Args:
        o_text, o_region: (B, H, N, hd); lse_text, lse_region: (B, H, N).
        coefs: (B, N, 3) weights on [text-key softmax, region-key softmax, joint softmax].
        has_text, has_region: (B,) bool, the block has a valid key.

    Returns:
        (B, H, N, hd) in o_text's dtype.
    """
    acc = lse_text.dtype
    c = coefs.to(acc)[:, None]  # (B, 1, N, 3)
    both = (has_text & has_region)[:, None, None]  # (B, 1, 1)
    # The lse difference only where both blocks have keys; elsewhere the joint softmax is the one
    # non-empty block (or nothing). ``where`` passes a zero gradient to the -inf side, never NaN.
    d = torch.where(both, lse_text - lse_region, 0.0)
    s_text = torch.where(both, torch.sigmoid(d), has_text[:, None, None].to(acc))
    s_region = torch.where(both, torch.sigmoid(-d), has_region[:, None, None].to(acc))
    a_text = c[..., 0] + c[..., 2] * s_text  # (B, H, N)
    a_region = c[..., 1] + c[..., 2] * s_region
    dt = o_text.dtype
    return a_text.unsqueeze(-1).to(dt) * o_text + a_region.unsqueeze(-1).to(dt) * o_region


def lse_mixed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_valid: Tensor,
    num_text: int,
    coefs: Tensor,
    dropout_p: float = 0.0,
    kernel: Optional[str] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """The same mixture as ``block_attention.block_mixed_attention`` from two block attentions.

    Args:
        q, k, v: (B, H, N, hd).
        key_valid: (B, N) bool.
        num_text: T; keys < T are the text block.
        coefs: (B, N, 3) (``attention.mixture_coefficients``).
        dropout_p: dropout on the mixed output (see the module docstring: not on the probabilities).
        kernel: "flex" or "math"; None picks flex on CUDA under torch.compile, math elsewhere.
        generator: for the dropout mask (tests).

    Returns:
        (B, H, N, hd).
    """
    if kernel is None:
        kernel = "flex" if use_flex(q) else "math"
    block = {"flex": flex_block_attention, "math": math_block_attention}[kernel]
    T = num_text
    valid_t, valid_r = key_valid[:, :T], key_valid[:, T:]
    o_t, lse_t = block(q, k[:, :, :T], v[:, :, :T], valid_t)
    o_r, lse_r = block(q, k[:, :, T:], v[:, :, T:], valid_r)
    out = merge_blocks(o_t, lse_t, o_r, lse_r, coefs, valid_t.any(dim=-1), valid_r.any(dim=-1))
    if dropout_p > 0.0:
        if generator is None:
            out = F.dropout(out, dropout_p, training=True)
        else:
            keep = torch.rand(out.shape, generator=generator, device=out.device) >= dropout_p
            out = out * keep.to(out.dtype) * (1.0 / (1.0 - dropout_p))
    return out
