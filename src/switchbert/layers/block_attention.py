"""Block-mixed attention with a hand-written backward: every soft SAB mode mixture in one kernel chain.

Dimension legend
    B batch size, H heads, N = T + R tokens (T text first, then R regions), hd head size

For each query, the soft mixture of the four SAB modes is (``attention.mixture_coefficients``)

    P = c_text * P_text + c_region * P_region + w_joint * P_joint

where P_text / P_region are the softmaxes over the query's valid text / region keys and P_joint the
softmax over all valid keys. All three come from one score matrix S. With per-block maxima m_b,
E = exp(S - m_b), Z_b = sum_{k in b} E_k and lse_b = m_b + log Z_b, they are
    P_b[k] = E_k / Z_b,    P_joint[k] = E_k * u_b,   u_b = exp(m_b - logaddexp(lse_text, lse_region))
for a key k in block b, so P = E * C_b with one scalar C_b = c_b / Z_b + w_joint * u_b per query and
block. The forward pass is one exp over S and two row sums.

The backward pass is the softmax Jacobian of each of the three terms, written out so that autograd does
not replay the ~15 elementwise ops of the forward (that replay was most of the switching overhead: docs/method.md
§3.1, "How the modes are computed", docs/performance.md). With dP the gradient of P and r_b = sum_{k in b} E_k dP_k,
    dS_k        = E_k * (C_b * dP_k - g_b),   g_b = c_b r_b / Z_b^2 + w_joint u_b delta_J
    d c_b       = delta_b = r_b / Z_b         (= <P_b, dP>)
    d w_joint   = delta_J = sum_b u_b r_b      (= <P_joint, dP>)
It is the same math as the flash-style "attention per key block, merged by log-sum-exp" in docs/method.md,
with the (B, H, N, N) scores kept in memory: at the paper's 75 tokens a score row (N = 75) is about as
large as an output row (hd = 64), so tiling would save little memory traffic.

A block with no valid key (regions of a text-only sample) has Z_b = 0; it gets P_b = 0, so its mode
contributes nothing to that query, exactly as in the reference path.

Kernel count (docs/performance.md): on a GPU in eager mode every op here is a launch, so the op
keeps q, k, v contiguous once instead of per matmul, computes the constants without ``where``s or a
``logsumexp``, and keeps the (dropped) probabilities for dV instead of rebuilding them in the backward
(one more (B, H, N, N) tensor per layer, in v's dtype, for about 10 fewer ops per layer).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


def accumulation_dtype(t: Tensor) -> torch.dtype:
    """Softmax statistics in float32 for half inputs (as SDPA does), else the input's own dtype."""
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _block_stats(e: Tensor, num_text: int) -> tuple[Tensor, Tensor]:
    """Turns masked scores into E = exp(S - m_b) in place and returns (m, Z), each (B, H, N, 2).

    Args:
        e: (B, H, N, N) scores with -inf at padded keys; overwritten with E.
        num_text: T; key columns < T are the text block.
    """
    lowest = torch.finfo(e.dtype).min
    ms, zs = [], []
    for cols in (slice(None, num_text), slice(num_text, None)):
        block = e[..., cols]
        # An empty block has max -inf; the lowest finite value keeps exp(-inf - m) = 0 and no NaN,
        # and leaves every real maximum unchanged (one clamp instead of a compare and a fill).
        m = block.amax(dim=-1, keepdim=True).clamp_(min=lowest)
        block.sub_(m).exp_()
        ms.append(m)
        zs.append(block.sum(dim=-1, keepdim=True))
    return torch.cat(ms, dim=-1), torch.cat(zs, dim=-1)


def _mixture_constants(m: Tensor, z: Tensor, c: Tensor, w_joint: Tensor) -> tuple[Tensor, ...]:
    """Per query and key block: 1/Z_b, u_b, c_b / Z_b, w_joint u_b and C_b (each (B, H, N, 2)).

    With s_b = exp(lse_b - lse_all) the joint softmax's mass on block b, u_b = s_b / Z_b. An empty
    block has Z_b = 0, lse_b = -inf and s_b = u_b = 0; Z_b is clamped to 1 there (a non-empty block
    has Z_b >= 1: its maximum contributes exp(0)), so 1/Z_b is finite and multiplies only E = 0 and,
    in the backward, r_b = 0. No ``where``: every op is one kernel.

    Args:
        m, z: (B, H, N, 2) block maxima and sums of E.
        c: (B, 1, N, 2) fixed block weights; w_joint: (B, 1, N, 1).
    """
    lse = m + z.log()  # -inf for an empty block
    lse_all = torch.logaddexp(lse[..., 0:1], lse[..., 1:2])
    inv_z = z.clamp(min=1.0).reciprocal_()
    u = (lse - lse_all).exp_().mul_(inv_z)
    c_inv_z = c * inv_z
    wj_u = u * w_joint
    return inv_z, u, c_inv_z, wj_u, c_inv_z + wj_u


def _scale_blocks(e: Tensor, coef: Tensor, num_text: int) -> Tensor:
    """A new tensor ``e[..., k] * coef[..., block(k)]`` for coef (B, H, N, 2), in e's dtype.

    Copy, then scale each block in place: ``out=`` into a column slice would be one pass fewer in
    eager mode, but torch.compile cannot trace a non-contiguous ``out=`` and would break the graph.
    The product stays in float32 and is rounded to bf16 once, by the caller: copying E to bf16 first
    (one pass fewer) rounds twice; in gpu_check's CPU smoke correctness run that took the bf16
    gradients' distance to float64 from 4.3e-2 to 7.4e-2.
    """
    out = e.clone()
    out[..., :num_text].mul_(coef[..., 0:1])
    out[..., num_text:].mul_(coef[..., 1:2])
    return out


class _BlockMixedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, key_valid, num_text, coefs, drop, p_drop):
        acc = accumulation_dtype(q)
        # q, k, v arrive as head-split views; one copy each here, instead of one inside every
        # matmul of the forward and backward pass that reads them.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        scores = torch.matmul(q, k.transpose(-1, -2))
        if scores.dtype == acc:
            e = scores.mul_(q.shape[-1] ** -0.5)
        else:  # scale and upcast in one pass (a bf16 product is written straight into float32)
            e = torch.mul(scores, q.shape[-1] ** -0.5, out=torch.empty(scores.shape, dtype=acc, device=scores.device))
        del scores
        e.masked_fill_(~key_valid[:, None, None, :], float("-inf"))
        m, z = _block_stats(e, num_text)
        c = coefs[..., :2].to(acc)[:, None]  # (B, 1, N, 2)
        wj = coefs[..., 2:].to(acc)[:, None]  # (B, 1, N, 1)
        inv_z, u, c_inv_z, wj_u, coef = _mixture_constants(m, z, c, wj)
        probs = _scale_blocks(e, coef, num_text)
        scale = 1.0 / (1.0 - p_drop)
        if drop is not None:  # a fill with the dropped mask: one op, where a bool multiply converts first
            probs.masked_fill_(drop, 0.0).mul_(scale)
        # The (dropped) probabilities in v's dtype are kept for dV: recomputing them in the backward
        # took a copy, two scalings and the dropout again.
        probs = probs.to(v.dtype)
        out = torch.matmul(probs, v)
        ctx.save_for_backward(q, k, v, e, drop, probs, inv_z, u, c_inv_z, wj_u, coef)
        ctx.num_text, ctx.scale = num_text, scale
        ctx.coef_dtype = coefs.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):
        q, k, v, e, drop, probs, inv_z, u, c_inv_z, wj_u, coef = ctx.saved_tensors
        T = ctx.num_text
        d_out = d_out.contiguous()
        # Gradient w.r.t. the (undropped) mixture probabilities, without the 1 / (1 - p): that factor
        # is linear all the way through and is applied once, to dS and to the coefficient gradients.
        dp = torch.matmul(d_out, v.transpose(-1, -2)).to(e.dtype)
        if drop is not None:
            dp.masked_fill_(drop, 0.0)
        ed = dp.mul_(e)  # E * dP, in dp's storage
        r = torch.cat([ed[..., :T].sum(-1, keepdim=True), ed[..., T:].sum(-1, keepdim=True)], dim=-1)
        delta = r * inv_z  # (B, H, N, 2): <P_b, dP>
        delta_j = (u * r).sum(-1, keepdim=True)  # (B, H, N, 1): <P_joint, dP>
        g = torch.addcmul(c_inv_z * delta, wj_u, delta_j)  # c_b r_b / Z_b^2 + w_joint u_b delta_J
        ds = ed
        for i, cols in enumerate((slice(None, T), slice(T, None))):
            ds[..., cols].mul_(coef[..., i : i + 1]).addcmul_(e[..., cols], g[..., i : i + 1], value=-1.0)
        ds.mul_(q.shape[-1] ** -0.5 * ctx.scale)
        dq = torch.matmul(ds.to(q.dtype), k)
        dk = torch.matmul(ds.transpose(-1, -2).to(k.dtype), q)
        dv = torch.matmul(probs.transpose(-1, -2), d_out.to(probs.dtype)).to(v.dtype)
        # (B, N, 3): the coefficients are broadcast over heads, so their gradients sum over heads.
        d_coefs = torch.cat([delta, delta_j], dim=-1).sum(dim=1)
        if ctx.scale != 1.0:
            d_coefs.mul_(ctx.scale)
        d_coefs = d_coefs.to(ctx.coef_dtype)
        return dq, dk, dv, None, None, d_coefs, None, None


def block_mixed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_valid: Tensor,
    num_text: int,
    coefs: Tensor,
    dropout_p: float = 0.0,
    keep: Optional[Tensor] = None,
) -> Tensor:
    """Attention whose per-query pattern is a mix of block-wise and joint softmaxes.

    Args:
        q, k, v: (B, H, N, hd); scores are q.k / sqrt(hd).
        key_valid: (B, N) bool.
        num_text: T; key positions < T form the text block, the rest the region block.
        coefs: (B, N, 3) weights each query puts on the softmax over its valid text keys, over its valid
            region keys, and over all its valid keys (``attention.mixture_coefficients``).
        dropout_p: attention-probability dropout (0 in eval).
        keep: optional (B, H, N, N) bool dropout mask (kept entries); drawn here when ``dropout_p > 0``
            and not given. Passing it makes the op deterministic (tests).

    Returns:
        (B, H, N, hd): sum over keys of P * v, with P = c_text P_text + c_region P_region + w_joint P_joint,
        dropped out with ``keep`` and rescaled by 1 / (1 - dropout_p).
    """
    drop = None
    if dropout_p > 0.0:
        if keep is None:  # the dropped entries, drawn directly (no inversion kernel)
            B, H, N, _ = q.shape
            drop = torch.empty(B, H, N, N, dtype=torch.bool, device=q.device).bernoulli_(dropout_p)
        else:
            drop = ~keep
    return _BlockMixedAttention.apply(q, k, v, key_valid, num_text, coefs, drop, dropout_p)


def split_mixed_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_valid: Tensor,
    num_text: int,
    coefs: Tensor,
    dropout_p: float = 0.0,
) -> Tensor:
    """The same mixture as ``block_mixed_attention`` from three SDPA calls, with no score matrix.

    P_joint is UNITER's attention over all valid keys; P_text and P_region are attentions of every query
    over one key block. The mixture is linear in the three outputs, so no log-sum-exp (and no gradient
    through one) is needed, and each call can use a flash or memory-efficient kernel. It does about twice
    the attention FLOPs of one joint attention (1.6% of a BERT-base layer's matmuls at 75 tokens); which
    of the two implementations is faster depends on the device (docs/performance.md).

    Dropout is drawn independently in each call, not once on the mixed probabilities: the expectation is
    the same, the noise slightly different [ours].

    Args and returns: as ``block_mixed_attention`` (no ``keep``).
    """
    out = coefs[:, None, :, 2:].to(q.dtype) * F.scaled_dot_product_attention(
        q, k, v, attn_mask=key_valid[:, None, None, :], dropout_p=dropout_p
    )
    for i, cols in enumerate((slice(None, num_text), slice(num_text, None))):
        valid = key_valid[:, cols]
        has_key = valid.any(dim=-1)  # (B,)
        # A block with no valid key (no image) would give SDPA an all-masked row (NaN): let it see the
        # block's first key instead and zero the term, so neither the output nor a gradient sees it.
        first = torch.zeros_like(valid)
        first[:, 0] = True
        valid = valid | (first & ~has_key[:, None])
        o = F.scaled_dot_product_attention(
            q, k[:, :, cols], v[:, :, cols], attn_mask=valid[:, None, None, :], dropout_p=dropout_p
        )
        coef = coefs[..., i] * has_key[:, None].to(coefs.dtype)  # (B, N)
        out = out + coef[:, None, :, None].to(q.dtype) * o
    return out
