"""The attention math: fused == reference == independent naive implementations, in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from switchbert.config import MODES
from switchbert.layers.attention import hard_route_mask, mixture_coefficients
from switchbert.layers.block_attention import block_mixed_attention
from switchbert.layers.lse_attention import flex_block_attention, lse_mixed_attention, math_block_attention
from switchbert.layers.transformer import SwitchLayer



@pytest.fixture(autouse=True)
def float64_default():
    """Every tensor in this module is float64; restored afterwards so other modules are unaffected."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)

B, T, R, D, H = 4, 5, 4, 16, 4


def make_layer(seed: int = 0) -> SwitchLayer:
    torch.manual_seed(seed)
    layer = SwitchLayer(D, H, 32, 0.0, 0.0, 1e-12).double()
    for p in layer.parameters():  # non-trivial LayerNorm parameters too
        torch.nn.init.normal_(p, std=0.3)
    return layer.eval()


def inputs(seed: int = 1, pad: bool = True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T + R, D, generator=g)
    valid = torch.ones(B, T + R, dtype=torch.bool)
    if pad:
        valid[1, T - 2 :T] = False  # two padded text tokens
        valid[2, T + 2 :] = False  # two padded regions
        valid[3, T + 1 :] = False  # only the IMG token
    return x, valid


def random_weights(seed: int, top_k: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(B, 4, generator=g)
    if top_k is not None:
        kth = w.topk(top_k, dim=-1).values[:, -1:]
        w = w * (w >= kth)
    return w / w.sum(-1, keepdim=True)


# ---- an independent, naive post-LN layer built from the layer's weights -------------------------

def naive_attend(layer: SwitchLayer, xq: torch.Tensor, xkv: torch.Tensor, kv_valid: torch.Tensor) -> torch.Tensor:
    """Plain multi-head attention of queries ``xq`` (L, D) over keys ``xkv`` (S, D), one sample."""
    a = layer.attention
    hd = D // H
    q = (xq @ a.query.weight.T + a.query.bias).view(-1, H, hd).transpose(0, 1)
    k = (xkv @ a.key.weight.T + a.key.bias).view(-1, H, hd).transpose(0, 1)
    v = (xkv @ a.value.weight.T + a.value.bias).view(-1, H, hd).transpose(0, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    s = s.masked_fill(~kv_valid[None, None, :], float("-inf"))
    ctx = (torch.softmax(s, -1) @ v).transpose(0, 1).reshape(-1, D)
    return ctx @ a.output.weight.T + a.output.bias


def naive_finish(layer: SwitchLayer, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    mid = F.layer_norm(x + attn, (D,), layer.attention_norm.weight, layer.attention_norm.bias, 1e-12)
    ffn = F.gelu(mid @ layer.ffn.up.weight.T + layer.ffn.up.bias) @ layer.ffn.down.weight.T + layer.ffn.down.bias
    return F.layer_norm(mid + ffn, (D,), layer.ffn_norm.weight, layer.ffn_norm.bias, 1e-12)


def naive_mode(layer: SwitchLayer, x: torch.Tensor, valid: torch.Tensor, mode: str) -> torch.Tensor:
    """One mode of Table 1 as explicit self/cross/joint attention, per sample."""
    outs = []
    for b in range(B):
        xt, xr = x[b, :T], x[b, T:]
        vt, vr = valid[b, :T], valid[b, T:]
        if mode == "SS":  # each modality run alone
            at, ar = naive_attend(layer, xt, xt, vt), naive_attend(layer, xr, xr, vr)
        elif mode == "SC":  # text self, regions attend to text
            at, ar = naive_attend(layer, xt, xt, vt), naive_attend(layer, xr, xt, vt)
        elif mode == "CS":  # text attends to regions, regions self
            at, ar = naive_attend(layer, xt, xr, vr), naive_attend(layer, xr, xr, vr)
        else:  # joint: plain single-stream attention over the concatenation
            a = naive_attend(layer, x[b], x[b], valid[b])
            at, ar = a[:T], a[T:]
        outs.append(naive_finish(layer, x[b], torch.cat([at, ar])))
    return torch.stack(outs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl,hard", [("fused", False), ("fused", True), ("sdpa", False), ("flex", False),
                                       ("reference", False)])
def test_each_mode_equals_independent_implementation(mode, impl, hard):
    layer = make_layer()
    x, valid = inputs()
    w = F.one_hot(torch.full((B,), MODES.index(mode)), 4).double()
    _, out = layer(x, valid, T, w, hard=hard, impl=impl)
    expected = naive_mode(layer, x, valid, mode)
    real = valid.unsqueeze(-1)
    torch.testing.assert_close(out * real, expected * real, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("impl", ["fused", "sdpa", "flex"])
@pytest.mark.parametrize("top_k", [None, 2, 1])
def test_fused_equals_reference_for_random_mixtures(top_k, impl):
    layer = make_layer(3)
    x, valid = inputs(4)
    w = random_weights(5, top_k)
    _, fused = layer(x, valid, T, w, hard=False, impl=impl)
    _, ref = layer(x, valid, T, w, hard=False, impl="reference")
    torch.testing.assert_close(fused, ref, atol=1e-12, rtol=1e-10)
    # and against the naive per-mode outputs mixed by hand (attention is linear in the mixture)
    attn_naive = sum(
        w[:, m, None, None] * _naive_attention_only(layer, x, valid, mode) for m, mode in enumerate(MODES)
    )
    attn_fused = layer.attention(x, valid, T, w, hard=False, impl=impl)
    torch.testing.assert_close(attn_fused * valid[..., None], attn_naive * valid[..., None], atol=1e-12, rtol=1e-10)


def _naive_attention_only(layer, x, valid, mode):
    outs = []
    for b in range(B):
        xt, xr, vt, vr = x[b, :T], x[b, T:], valid[b, :T], valid[b, T:]
        src = {"SS": ((xt, vt), (xr, vr)), "SC": ((xt, vt), (xt, vt)), "CS": ((xr, vr), (xr, vr))}
        if mode == "J":
            outs.append(naive_attend(layer, x[b], x[b], valid[b]))
        else:
            (kt, mt), (kr, mr) = src[mode]
            outs.append(torch.cat([naive_attend(layer, xt, kt, mt), naive_attend(layer, xr, kr, mr)]))
    return torch.stack(outs)


@pytest.mark.parametrize("impl", ["fused", "sdpa", "flex"])
def test_fused_gradients_equal_reference(impl):
    layer = make_layer(7)
    x, valid = inputs(8)
    valid[0, T:] = False  # a text-only sample: the region block is empty
    w = random_weights(9).requires_grad_(True)
    grads = []
    for impl in (impl, "reference"):
        layer.zero_grad()
        w.grad = None
        xx = x.clone().requires_grad_(True)
        _, out = layer(xx, valid, T, w, hard=False, impl=impl)
        (out * valid[..., None] * torch.linspace(-1, 1, D)).sum().backward()
        grads.append([xx.grad.clone(), w.grad.clone()] + [p.grad.clone() for p in layer.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def mixture_probs(scores, valid, w):
    """(B, H, N, N) probabilities of the fused op, read out with V = identity (hd = N)."""
    N = scores.shape[-1]
    # q = scores, k = sqrt(N) I gives q.k / sqrt(hd) = scores exactly.
    q = scores
    k = (math.sqrt(N) * torch.eye(N)).expand(scores.shape[0], scores.shape[1], N, N)
    v = torch.eye(N).expand_as(k)
    return block_mixed_attention(q, k, v, valid, T, mixture_coefficients(w, T, N))


def test_probabilities_are_a_distribution_and_joint_is_one_softmax():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(B, H, T + R, T + R, generator=g)
    _, valid = inputs()
    w = random_weights(1)
    p = mixture_probs(scores, valid, w)
    torch.testing.assert_close(p.sum(-1), torch.ones(B, H, T + R))
    assert (p[~valid[:, None, None, :].expand_as(p)] == 0).all()
    j = F.one_hot(torch.full((B,), 3), 4).double()
    plain = torch.softmax(scores.masked_fill(~valid[:, None, None, :], float("-inf")), -1)
    torch.testing.assert_close(mixture_probs(scores, valid, j), plain)


def naive_mixture_probs(scores, valid, coefs):
    """The mixture written out: c_text P_text + c_region P_region + w_joint P_joint, loops over rows."""
    Bn, Hn, N, _ = scores.shape
    out = torch.zeros_like(scores)
    blocks = (torch.arange(N) < T, torch.arange(N) >= T)
    for b in range(Bn):
        for h in range(Hn):
            for i in range(N):
                row = scores[b, h, i]
                p_all = torch.softmax(row.masked_fill(~valid[b], float("-inf")), -1)
                out[b, h, i] += coefs[b, i, 2] * p_all
                for j, blk in enumerate(blocks):
                    allowed = valid[b] & blk
                    if allowed.any():
                        out[b, h, i] += coefs[b, i, j] * torch.softmax(row.masked_fill(~allowed, float("-inf")), -1)
    return out


def fused_op_inputs(seed: int):
    """Random q, k, v, padding (one text-only sample), and arbitrary non-negative coefficients."""
    g = torch.Generator().manual_seed(seed)
    N, hd = T + R, 3
    q, k, v = (torch.randn(B, H, N, hd, generator=g) for _ in range(3))
    _, valid = inputs()
    valid[0, T:] = False  # no image: the region block is empty
    coefs = torch.rand(B, N, 3, generator=g)  # text keys, region keys, joint
    coefs[1, :, 1] = 0.0  # a block some queries put no weight on (top-K)
    return q, k, v, valid, coefs


def test_fused_op_equals_naive_mixture_with_empty_block_and_zero_weights():
    q, k, v, valid, coefs = fused_op_inputs(3)
    out = block_mixed_attention(q, k, v, valid, T, coefs)
    expected = naive_mixture_probs(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), valid, coefs) @ v
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_op_backward_passes_gradcheck(dropout):
    # The backward is written by hand (block_attention.py); gradcheck compares it with finite
    # differences for q, k, v and the mixture coefficients, including an empty block and zero weights.
    q, k, v, valid, coefs = fused_op_inputs(4)
    keep = torch.rand(B, H, T + R, T + R, generator=torch.Generator().manual_seed(5)) >= dropout
    args = [t.clone().requires_grad_(True) for t in (q, k, v, coefs)]

    def f(q, k, v, c):
        return block_mixed_attention(q, k, v, valid, T, c, dropout_p=dropout, keep=keep)

    assert torch.autograd.gradcheck(f, args, atol=1e-8, rtol=1e-6)


def test_fused_op_dropout_uses_the_keep_mask():
    q, k, v, valid, coefs = fused_op_inputs(6)
    keep = torch.rand(B, H, T + R, T + R, generator=torch.Generator().manual_seed(7)) >= 0.25
    out = block_mixed_attention(q, k, v, valid, T, coefs, dropout_p=0.25, keep=keep)
    probs = naive_mixture_probs(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), valid, coefs)
    torch.testing.assert_close(out, (probs * keep / 0.75) @ v, atol=1e-12, rtol=1e-10)


def test_fused_op_in_bf16_autocast_is_close_to_float64():
    # Training runs the op under bf16 autocast: the softmax statistics must stay float32.
    q, k, v, valid, coefs = fused_op_inputs(8)
    expected = block_mixed_attention(q, k, v, valid, T, coefs)
    args = [t.float().clone().requires_grad_(True) for t in (q, k, v)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block_mixed_attention(*[a.bfloat16() for a in args], valid, T, coefs.float())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, atol=3e-2, rtol=3e-2)
    out.float().sum().backward()
    assert all(torch.isfinite(a.grad).all() for a in args)


def test_padding_changes_no_valid_output():
    layer = make_layer(11)
    x, valid = inputs(12, pad=False)
    w = random_weights(13)
    _, base = layer(x, valid, T, w, hard=False, impl="fused")
    # append 3 padded text tokens (between text and regions) and 2 padded regions with garbage values
    g = torch.Generator().manual_seed(14)
    xt, xr = x[:, :T], x[:, T:]
    x2 = torch.cat([xt, 100 * torch.randn(B, 3, D, generator=g), xr, 100 * torch.randn(B, 2, D, generator=g)], 1)
    v2 = torch.cat([valid[:, :T], torch.zeros(B, 3, dtype=torch.bool), valid[:, T:], torch.zeros(B, 2, dtype=torch.bool)], 1)
    for impl, hard in (("fused", False), ("sdpa", False), ("flex", False), ("reference", False)):
        _, out = layer(x2, v2, T + 3, w, hard=hard, impl=impl)
        torch.testing.assert_close(out[:, :T], base[:, :T], atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(out[:, T + 3 : T + 3 + R], base[:, T:], atol=1e-12, rtol=1e-10)


def test_hard_mask_of_no_image_sample_has_no_empty_row():
    valid = torch.zeros(1, T + R, dtype=torch.bool)
    valid[0, :T] = True  # text only, IMG masked
    ss = F.one_hot(torch.tensor([0]), 4).double()
    mask = hard_route_mask(valid, T, ss)
    assert mask.any(-1).all()
    # text rows see exactly the valid text keys
    assert torch.equal(mask[0, 0, :T], valid[0].expand(T, -1))


def test_huge_scores_on_padded_keys_keep_gradients_finite():
    # Real BERT weights can give [PAD] keys scores far above the valid keys' log-sum-exp; the
    # mixture must neither overflow in the forward pass nor produce NaN gradients.
    layer = make_layer(21)
    x, valid = inputs(22)
    x = x.clone()
    x[~valid] = 1e3 * x[~valid].sign()
    x.requires_grad_(True)
    w = random_weights(23).requires_grad_(True)
    s = torch.randn(B, H, T + R, T + R).masked_fill(~valid[:, None, None, :], 800.0).requires_grad_(True)
    probs = mixture_probs(s, valid, w)
    probs.sum().backward()
    assert torch.isfinite(probs).all() and torch.isfinite(s.grad).all() and torch.isfinite(w.grad).all()
    _, out = layer(x, valid, T, w, hard=False, impl="fused")
    (out * valid[..., None]).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_fused_op_keeps_a_block_far_below_the_other_in_float32():
    # Region scores 200 below the text scores: exp(-200) underflows in float32, so one shared row max
    # would give the region block Z = 0 and lose P_region. Per-block maxima keep it exact.
    q, k, v, valid, coefs = fused_op_inputs(9)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores[..., T:] -= 200.0
    expected = naive_mixture_probs(scores, valid, coefs)
    N = T + R
    k_id = (math.sqrt(N) * torch.eye(N)).expand(B, H, N, N)
    got = block_mixed_attention(scores.float(), k_id.float(), torch.eye(N).expand(B, H, N, N).float(), valid, T,
                                coefs.float())
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-4)  # float32 rounding; a lost block is off by ~0.5


@pytest.mark.parametrize("impl", ["fused", "sdpa", "flex"])
def test_training_dropout_with_a_text_only_sample_stays_finite(impl):
    torch.manual_seed(0)
    layer = SwitchLayer(D, H, 32, 0.1, 0.3, 1e-12).double().train()
    x, valid = inputs(30)
    valid[0, T:] = False  # no image: the region key block is empty
    x = x.clone().requires_grad_(True)
    w = random_weights(31).requires_grad_(True)
    _, out = layer(x, valid, T, w, hard=False, impl=impl)
    (out * valid[..., None]).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()
    # dropout is on: two draws differ
    _, again = layer(x, valid, T, w, hard=False, impl=impl)
    assert not torch.allclose(out, again)


def test_fused_op_dropout_is_unbiased():
    # The op draws its own mask when none is given: kept with probability 1 - p and rescaled by
    # 1 / (1 - p), so the mean over many draws is the output without dropout.
    q, k, v, valid, coefs = fused_op_inputs(10)
    torch.manual_seed(0)
    clean = block_mixed_attention(q, k, v, valid, T, coefs)
    draws = torch.stack([block_mixed_attention(q, k, v, valid, T, coefs, dropout_p=0.4)
                         for _ in range(3000)])
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert ((draws.mean(0) - clean).abs() <= 5 * stderr + 1e-9).all()


def test_mixture_coefficients_follow_table_1():
    # (SS, SC, CS, J) = (.1, .2, .3, .4); 2 text tokens then 1 region token.
    w = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    coef = mixture_coefficients(w, 2, 3)
    text_row = [0.1 + 0.2, 0.3, 0.4]  # text keys from SS and SC, region keys from CS, joint
    region_row = [0.2, 0.1 + 0.3, 0.4]  # text keys from SC, region keys from SS and CS, joint
    torch.testing.assert_close(coef, torch.tensor([[text_row, text_row, region_row]]))


def test_expand_mode_weights_places_a_subset_at_its_modes():
    from switchbert.layers.attention import expand_mode_weights

    w = torch.tensor([[0.25, 0.75]])  # over (CS, SC): a subset in a non-canonical order
    index = torch.tensor([MODES.index("CS"), MODES.index("SC")])
    assert expand_mode_weights(w, index).tolist() == [[0.0, 0.75, 0.25, 0.0]]  # (SS, SC, CS, J)


# ---- the flex path: two block attentions with their log-sum-exp, merged -------------------------

def test_lse_op_equals_naive_mixture_with_empty_block_and_zero_weights():
    q, k, v, valid, coefs = fused_op_inputs(3)
    out = lse_mixed_attention(q, k, v, valid, T, coefs, kernel="math")
    expected = naive_mixture_probs(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), valid, coefs) @ v
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-10)


def test_lse_op_gradients_pass_gradcheck_with_an_empty_block():
    # The gradient reaches q and k also through each block's log-sum-exp (the joint weights), and
    # the coefficients (the switcher's weights) through the merge; sample 0 has no region key.
    q, k, v, valid, coefs = fused_op_inputs(4)
    args = [t.clone().requires_grad_(True) for t in (q, k, v, coefs)]

    def f(q, k, v, c):
        return lse_mixed_attention(q, k, v, valid, T, c, kernel="math")

    assert torch.autograd.gradcheck(f, args, atol=1e-8, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_kernel_equals_the_math_kernel_on_cpu():
    # FlexAttention itself (eager, forward only: torch 2.13 has no FlexAttention backward on CPU and
    # no lse from its compiled CPU kernel), with a key block empty for sample 0.
    q, k, v, valid, _ = fused_op_inputs(5)
    for cols in (slice(None, T), slice(T, None)):
        kv_valid = valid[:, cols]
        got_out, got_lse = flex_block_attention(q, k[:, :, cols], v[:, :, cols], kv_valid)
        out, lse = math_block_attention(q, k[:, :, cols], v[:, :, cols], kv_valid)
        torch.testing.assert_close(got_out, out, atol=1e-12, rtol=1e-10)
        assert torch.equal(torch.isinf(got_lse), torch.isinf(lse))
        finite = torch.isfinite(lse)
        torch.testing.assert_close(got_lse[finite], lse[finite], atol=1e-12, rtol=1e-10)
    assert torch.isinf(lse[0]).all()  # the empty region block of the text-only sample


def test_lse_op_dropout_drops_the_mixed_output():
    # The documented departure: dropout on the output O, not on the probabilities.
    q, k, v, valid, coefs = fused_op_inputs(6)
    clean = lse_mixed_attention(q, k, v, valid, T, coefs, kernel="math")
    got = lse_mixed_attention(q, k, v, valid, T, coefs, dropout_p=0.25, kernel="math",
                              generator=torch.Generator().manual_seed(7))
    keep = torch.rand(clean.shape, generator=torch.Generator().manual_seed(7)) >= 0.25
    torch.testing.assert_close(got, clean * keep / 0.75, atol=1e-12, rtol=1e-10)


# ---- queries with no key: one rule for every path ----------------------------------------------

@pytest.mark.parametrize("mode", ["CS", "SS"])
def test_query_without_keys_gets_zero_attention_in_every_path(mode):
    # A text-only sample (regions all masked, IMG included): in CS its text queries have no key. The
    # soft paths (training) and the hard path (evaluation) must agree: zero attention output, the
    # token keeps its residual. Region rows are padding and not compared.
    layer = make_layer(40)
    x, valid = inputs(41)
    valid[0, T:] = False
    valid[2, T:] = False
    w = F.one_hot(torch.full((B,), MODES.index(mode)), 4).double()
    text = valid[:, :T, None]
    attn = {}
    for impl, hard in (("fused", True), ("fused", False), ("sdpa", False), ("flex", False), ("reference", False)):
        attn[impl, hard] = layer.attention(x, valid, T, w, hard=hard, impl=impl)[:, :T] * text
    expected = _naive_attention_only(layer, x, valid, mode)[:, :T] * text
    if mode == "CS":  # no region key: a zero context, so only the output projection's bias
        expected[[0, 2]] = layer.attention.output.bias * text[[0, 2]]
    for key, got in attn.items():
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-10, msg=lambda m: f"{key}: {m}")
