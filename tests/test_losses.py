"""Losses against naive float64 re-computations, written as explicit loops over the formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from switchbert.heads import IGNORE_INDEX, PretrainHeads
from switchbert.heads.losses import (
    ignore_mismatched,
    itm_loss,
    mlm_loss,
    mrc_kl_loss,
    pretrain_loss,
    refexp_bce_loss,
    retrieval_4way_loss,
    vqa_bce_loss,
)
from switchbert.outputs import EncoderOutput

g = torch.Generator().manual_seed(1234)


def _log_softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def _sigmoid_bce(x: float, t: float) -> float:
    s = 1.0 / (1.0 + math.exp(-x))
    return -(t * math.log(s) + (1 - t) * math.log(1 - s))


def test_mlm_loss_matches_naive_loop_full_and_gathered():
    logits = torch.randn(2, 5, 13, generator=g)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[0, 3], labels[1, 4] = 2, 12, 0
    terms = []
    for b in range(2):
        for t in range(5):
            if labels[b, t] != IGNORE_INDEX:
                terms.append(-_log_softmax_row(logits[b, t].double().tolist())[int(labels[b, t])])
    expected = sum(terms) / len(terms)
    assert mlm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    sel = labels != IGNORE_INDEX
    assert mlm_loss(logits[sel], labels[sel]).item() == pytest.approx(expected, rel=1e-6)


def test_mlm_loss_without_targets_is_zero_and_backpropagates():
    logits = torch.randn(2, 5, 13, requires_grad=True)
    loss = mlm_loss(logits, torch.full((2, 5), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    empty = torch.randn(0, 13, requires_grad=True)
    assert mlm_loss(empty, torch.zeros(0, dtype=torch.long)).item() == 0.0
    with pytest.raises(ValueError, match="labels"):
        mlm_loss(logits, torch.zeros(2, 4, dtype=torch.long))


def _naive_kl(logits: torch.Tensor, p: torch.Tensor, mask: torch.Tensor) -> float:
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for n in range(logits.shape[1]):
            if not mask[b, n]:
                continue
            log_q = _log_softmax_row(logits[b, n].double().tolist())
            kl = 0.0
            for c, pc in enumerate(p[b, n].double().tolist()):
                if pc > 0:  # 0 * log 0 = 0
                    kl += pc * (math.log(pc) - log_q[c])
            total += kl
            count += 1
    return total / count


def test_mrc_kl_matches_naive_loop_with_zero_probabilities():
    logits = torch.randn(3, 4, 6, generator=g)
    p = torch.rand(3, 4, 6, generator=g)
    p[..., :2] = 0.0  # detector puts no mass on some classes
    p[0, 1] = torch.tensor([0, 0, 0, 1.0, 0, 0])  # a one-hot distribution
    p = p / p.sum(-1, keepdim=True)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 1] = mask[0, 3] = mask[2, 0] = True  # image 1 has no target: it must not count
    expected = _naive_kl(logits, p, mask)
    assert mrc_kl_loss(logits, p, mask).item() == pytest.approx(expected, rel=1e-5)
    assert mrc_kl_loss(logits[mask], p[mask]).item() == pytest.approx(expected, rel=1e-5)
    # Agrees with PyTorch's kl_div where that one is well defined.
    ref = torch.nn.functional.kl_div(torch.log_softmax(logits[mask], -1), p[mask], reduction="sum") / 3
    assert mrc_kl_loss(logits, p, mask).item() == pytest.approx(ref.item(), rel=1e-5)


def test_mrc_kl_zero_mass_on_impossible_class_is_not_nan():
    logits = torch.tensor([[0.0, 1.0, float("-inf")]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[0.25, 0.75, 0.0]], dtype=torch.float64)
    loss = mrc_kl_loss(logits, p)
    log_q = _log_softmax_row([0.0, 1.0])
    expected = 0.25 * (math.log(0.25) - log_q[0]) + 0.75 * (math.log(0.75) - log_q[1])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_mrc_kl_no_target_and_bad_shapes():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = mrc_kl_loss(logits, torch.rand(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    empty = torch.randn(0, 4, requires_grad=True)  # gathered, no row
    loss = mrc_kl_loss(empty, torch.rand(0, 4))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="target_probs"):
        mrc_kl_loss(logits, torch.rand(2, 3, 5))
    with pytest.raises(ValueError, match="target_mask"):
        mrc_kl_loss(logits, torch.rand(2, 3, 4), torch.ones(2, 3))


def test_itm_loss_matches_formula():
    logits = torch.randn(5, 2, generator=g)
    labels = torch.tensor([1, 0, 1, 1, 0])
    expected = sum(-_log_softmax_row(logits[i].double().tolist())[int(labels[i])] for i in range(5)) / 5
    assert itm_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        itm_loss(torch.randn(5, 3), labels)


def test_vqa_bce_is_sum_over_answers_mean_over_batch():
    logits = torch.randn(4, 7, generator=g)
    targets = torch.rand(4, 7, generator=g)
    targets[targets < 0.5] = 0.0
    expected = sum(
        _sigmoid_bce(float(logits[b, a]), float(targets[b, a])) for b in range(4) for a in range(7)
    ) / 4
    assert vqa_bce_loss(logits, targets).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="same"):
        vqa_bce_loss(logits, targets[:, :-1])


def test_retrieval_4way_loss_flat_and_grouped():
    scores = torch.randn(3, 4, generator=g)
    expected = sum(-_log_softmax_row(scores[i].double().tolist())[0] for i in range(3)) / 3
    assert retrieval_4way_loss(scores).item() == pytest.approx(expected, rel=1e-6)
    assert retrieval_4way_loss(scores.reshape(-1)).item() == pytest.approx(expected, rel=1e-6)
    # A perfect scorer (positive far ahead) gives ~0.
    assert retrieval_4way_loss(torch.tensor([[20.0, -20, -20, -20]])).item() < 1e-12
    with pytest.raises(ValueError, match="groups of 4"):
        retrieval_4way_loss(torch.randn(10))
    with pytest.raises(ValueError):
        retrieval_4way_loss(torch.randn(3, 5))


def test_refexp_bce_mean_over_valid_regions():
    logits = torch.randn(2, 5, generator=g)
    iou = torch.rand(2, 5, generator=g)
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    terms = [_sigmoid_bce(float(logits[b, n]), float(iou[b, n])) for b in range(2) for n in range(5) if mask[b, n]]
    assert refexp_bce_loss(logits, iou, mask).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    # Padded regions do not matter whatever their logits.
    logits2 = logits.clone()
    logits2[~mask] = 1e4
    assert refexp_bce_loss(logits2, iou, mask).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)
    leaf = logits.clone().requires_grad_()
    loss = refexp_bce_loss(leaf, iou, torch.zeros_like(mask))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(leaf.grad, torch.zeros_like(leaf))
    with pytest.raises(ValueError, match="share"):
        refexp_bce_loss(logits, iou[:, :4], mask)
    with pytest.raises(ValueError, match="bool"):
        refexp_bce_loss(logits, iou, mask.float())


def test_bf16_logits_give_float32_losses():
    logits = torch.randn(4, 7, generator=g)
    targets = torch.rand(4, 7, generator=g)
    loss = vqa_bce_loss(logits.bfloat16(), targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(vqa_bce_loss(logits.bfloat16().float(), targets).item(), rel=1e-6)


def test_ignore_mismatched():
    itm = torch.tensor([1, 0, 1])
    mlm = torch.tensor([[5, -100], [6, 7], [-100, 8]])
    mrc = torch.tensor([[True, False], [True, True], [False, True]])
    new_mlm, new_mrc = ignore_mismatched(itm, mlm, mrc)
    assert new_mlm.tolist() == [[5, -100], [-100, -100], [-100, 8]]
    assert new_mrc.tolist() == [[True, False], [False, False], [False, True]]
    assert ignore_mismatched(itm, new_mlm, new_mrc)[0].tolist() == new_mlm.tolist()  # idempotent
    with pytest.raises(ValueError):
        ignore_mismatched(itm, mlm[:2])


def test_pretrain_loss_gathered_equals_full_and_sums_parts():
    B, T, R, D, P, V, C = 3, 6, 4, 8, 6, 20, 5
    heads = PretrainHeads(nn.Embedding(V, D), region_hidden_size=D, pooler_size=P, num_region_classes=C)
    out = EncoderOutput(
        text_hidden=torch.randn(B, T, D, generator=g), region_hidden=torch.randn(B, R, D, generator=g),
        text_mask=torch.ones(B, T, dtype=torch.bool), region_mask=torch.ones(B, R, dtype=torch.bool),
        pooled_text=torch.randn(B, P, generator=g), pooled_region=torch.randn(B, P, generator=g),
        pooled=torch.randn(B, P, generator=g),
    )
    itm = torch.tensor([1, 0, 1])
    mlm = torch.full((B, T), IGNORE_INDEX)
    mlm[0, 2], mlm[1, 1], mlm[2, 4] = 3, 4, 5
    mrc_mask = torch.zeros(B, R - 1, dtype=torch.bool)
    mrc_mask[0, 0] = mrc_mask[1, 2] = mrc_mask[2, 1] = True
    probs = torch.softmax(torch.randn(B, R - 1, C, generator=g), -1)
    mlm, mrc_mask = ignore_mismatched(itm, mlm, mrc_mask)
    gathered = pretrain_loss(heads(out, mlm, mrc_mask), itm_labels=itm, mrc_target_probs=probs)
    full = pretrain_loss(heads(out), itm_labels=itm, mrc_target_probs=probs, mlm_labels=mlm, mrc_target_mask=mrc_mask)
    for name in ("total", "mlm", "mrc", "itm"):
        torch.testing.assert_close(getattr(gathered, name), getattr(full, name))
    torch.testing.assert_close(gathered.total, gathered.mlm + gathered.mrc + gathered.itm)
    weighted = pretrain_loss(heads(out, mlm, mrc_mask), itm_labels=itm, mrc_target_probs=probs, weights=(2, 0, 1))
    torch.testing.assert_close(weighted.total, 2 * gathered.mlm + gathered.itm)
    assert set(gathered.as_floats()) == {"loss", "mlm", "mrc", "itm"}
    with pytest.raises(ValueError, match="mlm_labels"):
        pretrain_loss(heads(out), itm_labels=itm, mrc_target_probs=probs, mrc_target_mask=mrc_mask)


def _boolean_mask_pretrain_loss(heads, out, itm, mlm, mrc_mask, probs):
    """The straightforward computation the index gathering replaced: x[mask] everywhere (float32)."""
    sel = mlm != IGNORE_INDEX
    mlm_logits = heads.mlm.transform(out.text_hidden[sel])
    mlm_logits = torch.nn.functional.linear(mlm_logits, heads.mlm.decoder_weight, heads.mlm.bias)
    mlm_part = torch.nn.functional.cross_entropy(mlm_logits, mlm[sel]) if sel.any() else mlm_logits.sum() * 0
    mrc_logits = heads.mrc.decoder(heads.mrc.transform(out.region_hidden[:, 1:][mrc_mask]))
    log_q = torch.log_softmax(mrc_logits, -1)
    p = probs[mrc_mask]
    kl = torch.where(p > 0, p * (torch.log(torch.where(p > 0, p, torch.ones_like(p))) - log_q), torch.zeros_like(p))
    mrc_part = kl.sum(-1).mean() if mrc_mask.any() else kl.sum() * 0
    itm_part = torch.nn.functional.cross_entropy(heads.itm(out.pooled), itm)
    return mlm_part, mrc_part, itm_part


def _random_pretrain_inputs(seed: int, B: int = 4, T: int = 7, R: int = 6, D: int = 8, P: int = 6, C: int = 5):
    gen = torch.Generator().manual_seed(seed)
    out = EncoderOutput(
        text_hidden=torch.randn(B, T, D, generator=gen, requires_grad=True),
        region_hidden=torch.randn(B, R, D, generator=gen, requires_grad=True),
        text_mask=torch.ones(B, T, dtype=torch.bool), region_mask=torch.ones(B, R, dtype=torch.bool),
        pooled_text=torch.randn(B, P, generator=gen), pooled_region=torch.randn(B, P, generator=gen),
        pooled=torch.randn(B, P, generator=gen, requires_grad=True),
    )
    itm = torch.randint(0, 2, (B,), generator=gen)
    mlm = torch.where(torch.rand(B, T, generator=gen) < 0.3, torch.randint(0, 20, (B, T), generator=gen),
                      torch.full((B, T), IGNORE_INDEX))
    mrc_mask = torch.rand(B, R - 1, generator=gen) < 0.3
    probs = torch.softmax(torch.randn(B, R - 1, C, generator=gen), -1)
    probs[..., 0] = 0.0  # a class the detector never predicts
    return out, itm, mlm, mrc_mask, probs


@pytest.mark.parametrize("seed, case", [(0, "random"), (5, "random"), (9, "random"), (6, "no MLM target"),
                                        (8, "no MRC target"), (10, "all mismatched")])
def test_pretrain_loss_by_index_equals_boolean_mask_computation(seed, case):
    """The sync-free path (collate's flat indices, index_select, branch-free means) gives the losses and
    gradients of the plain x[mask] computation, also when a batch has no MLM or no MRC target."""
    from switchbert.heads import flat_index

    torch.manual_seed(seed)
    heads = PretrainHeads(nn.Embedding(20, 8), region_hidden_size=8, pooler_size=6, num_region_classes=5)
    out, itm, mlm, mrc_mask, probs = _random_pretrain_inputs(seed)
    if case == "no MLM target":
        mlm = torch.full_like(mlm, IGNORE_INDEX)
    elif case == "no MRC target":
        mrc_mask = torch.zeros_like(mrc_mask)
    elif case == "all mismatched":
        itm = torch.zeros_like(itm)
    mlm, mrc_mask = ignore_mismatched(itm, mlm, mrc_mask)
    leaves = [out.text_hidden, out.region_hidden, out.pooled, *heads.parameters()]

    def losses_and_grads(parts):
        total = sum(parts)
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
        return [p.detach() for p in parts], [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]

    expected, expected_grads = losses_and_grads(_boolean_mask_pretrain_loss(heads, out, itm, mlm, mrc_mask, probs))
    logits = heads(out, mlm, mrc_mask, mlm_index=flat_index(mlm != IGNORE_INDEX), mrc_index=flat_index(mrc_mask))
    loss = pretrain_loss(logits, itm_labels=itm, mrc_target_probs=probs)
    got, got_grads = losses_and_grads([loss.mlm, loss.mrc, loss.itm])
    for name, a, b in zip(("mlm", "mrc", "itm"), got, expected):
        torch.testing.assert_close(a, b, msg=f"{case}: {name}")
    for a, b in zip(got_grads, expected_grads):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b)
    if case == "random":
        assert logits.mlm.shape[0] > 0 and logits.mrc.shape[0] > 0
    if case in ("no MLM target", "all mismatched"):
        assert loss.mlm.item() == 0.0 and logits.mlm.shape[0] == 0
    if case in ("no MRC target", "all mismatched"):
        assert loss.mrc.item() == 0.0 and logits.mrc.shape[0] == 0
    # Without indices the heads find the positions themselves (one sync on a GPU): same result.
    fallback = pretrain_loss(heads(out, mlm, mrc_mask), itm_labels=itm, mrc_target_probs=probs)
    assert torch.equal(fallback.total, loss.total)
