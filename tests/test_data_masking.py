"""Masking rates checked statistically (fixed seeds, tolerances of several standard errors)."""

import numpy as np

from switchbert.data.masking import (FIRST_WORD_ID, IGNORE_INDEX, apply_region_mask, mask_regions, mask_tokens,
                                     sample_itm_negative, sample_rng)
from switchbert.data.tokenizer import CLS_ID, MASK_ID, SEP_ID


def _caption(rng, length=30):
    return np.concatenate([[CLS_ID], rng.integers(2000, 30000, length - 2), [SEP_ID]])


def test_mlm_rates_80_10_10():
    rng = np.random.default_rng(0)
    n_tok = n_target = n_mask = n_random = n_keep = 0
    for i in range(4000):
        ids = _caption(rng)
        inp, lab = mask_tokens(ids, sample_rng(0, 0, i))
        tgt = lab != IGNORE_INDEX
        assert not tgt[0] and not tgt[-1], "[CLS]/[SEP] are never targets"
        np.testing.assert_array_equal(inp[~tgt], ids[~tgt])  # non-targets untouched
        np.testing.assert_array_equal(lab[tgt], ids[tgt])  # labels are the original ids
        n_tok += len(ids) - 2
        n_target += tgt.sum()
        n_mask += (inp[tgt] == MASK_ID).sum()
        changed = tgt & (inp != MASK_ID) & (inp != ids)
        n_random += changed.sum()
        assert (inp[changed] >= FIRST_WORD_ID).all()
        n_keep += (tgt & (inp == ids)).sum()
    # 112,000 candidate tokens: SE of the rate ~ 0.001
    assert abs(n_target / n_tok - 0.15) < 0.005
    # ~16,800 targets: SE ~ 0.003 for 80%, 0.0023 for 10%
    assert abs(n_mask / n_target - 0.8) < 0.012
    assert abs(n_random / n_target - 0.1) < 0.01  # (a random id equal to the original counts as kept: p ~ 3e-5)
    assert abs(n_keep / n_target - 0.1) < 0.01


def test_region_rates():
    targets = zeroed = total = 0
    for i in range(3000):
        t, z = mask_regions(36, sample_rng(1, 0, i))
        assert not (z & ~t).any(), "only targets are zeroed"
        targets += t.sum()
        zeroed += z.sum()
        total += 36
    assert abs(targets / total - 0.15) < 0.005  # SE ~ 0.001
    assert abs(zeroed / targets - 0.9) < 0.01  # SE ~ 0.002


def test_apply_region_mask_zeroes_rows_only():
    f = np.ones((4, 3), np.float32)
    out = apply_region_mask(f, np.array([False, True, False, True]))
    np.testing.assert_array_equal(out, [[1, 1, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]])
    assert f.sum() == 12  # input not modified


def test_itm_rate_and_never_self():
    picks = [sample_itm_negative(sample_rng(2, 0, i), i % 7, 7) for i in range(20000)]
    mism = [(i % 7, p) for i, p in enumerate(picks) if p is not None]
    assert abs(len(mism) / len(picks) - 0.5) < 0.012  # SE 0.0035
    assert all(p != i and 0 <= p < 7 for i, p in mism)
    counts = np.bincount([p for _, p in mism], minlength=7)
    assert counts.min() > 0.8 * counts.mean()  # roughly uniform over the others
    assert sample_itm_negative(sample_rng(2, 0, 0), 0, 1) is None  # nothing to swap with


def test_deterministic_per_seed_epoch_index():
    ids = _caption(np.random.default_rng(5), 38)
    a = mask_tokens(ids, sample_rng(3, 1, 17))
    b = mask_tokens(ids, sample_rng(3, 1, 17))
    np.testing.assert_array_equal(a[1], b[1])
    others = [mask_tokens(ids, sample_rng(s, e, 17))[1] for s, e in ((4, 1), (3, 2))]
    assert any(not np.array_equal(a[1], o) for o in others)
