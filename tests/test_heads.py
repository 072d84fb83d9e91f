"""Heads: shapes, the tied MLM decoder, gathered vs full logits, which states each head reads."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from switchbert.heads import (
    IGNORE_INDEX,
    MLMHead,
    MRCHead,
    PretrainHeads,
    RefExpHead,
    RetrievalHead,
    VQAHead,
    build_head,
    flat_index,
)
from switchbert.outputs import EncoderOutput

B, T, R, D, D_R, P, V, C, A = 3, 7, 5, 16, 12, 10, 50, 9, 11


def fake_output(seed: int = 0, d_r: int = D_R, dtype: torch.dtype = torch.float32) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, T, dtype=torch.bool)
    text_mask[1, 5:] = False
    region_mask = torch.ones(B, R, dtype=torch.bool)
    region_mask[2, 3:] = False
    return EncoderOutput(
        text_hidden=torch.randn(B, T, D, generator=g, dtype=dtype),
        region_hidden=torch.randn(B, R, d_r, generator=g, dtype=dtype),
        text_mask=text_mask,
        region_mask=region_mask,
        pooled_text=torch.randn(B, P, generator=g, dtype=dtype),
        pooled_region=torch.randn(B, P, generator=g, dtype=dtype),
        pooled=torch.randn(B, P, generator=g, dtype=dtype),
    )


def mlm_labels(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    labels[0, 1], labels[0, 4], labels[2, 2] = 3, 17, 49
    labels[1, 3] = int(torch.randint(0, V, (1,), generator=g))
    return labels


def test_mlm_decoder_is_the_embedding_matrix_and_trains_it():
    emb = nn.Embedding(V, D)
    head = MLMHead(emb)
    assert head.decoder_weight is emb.weight
    assert head.decoder_weight.data_ptr() == emb.weight.data_ptr()
    # The head references the matrix but does not own it: saved once, with the encoder.
    assert "decoder_weight" not in dict(head.named_parameters())
    assert all(p is not emb.weight for p in head.parameters())
    assert set(head.state_dict()) == {
        "bias", "transform.dense.weight", "transform.dense.bias",
        "transform.layer_norm.weight", "transform.layer_norm.bias",
    }
    out = fake_output()
    head(out.text_hidden).sum().backward()
    assert emb.weight.grad is not None and emb.weight.grad.abs().sum() > 0
    # Editing the embedding changes the decoder: it is the same storage, not a copy.
    with torch.no_grad():
        before = head(out.text_hidden)
        emb.weight[7, 0] += 1.0  # one coordinate: a uniform shift would vanish after LayerNorm
        after = head(out.text_hidden)
    assert not torch.allclose(before[..., 7], after[..., 7])
    assert torch.equal(before[..., 8], after[..., 8])


def test_mlm_logits_match_the_formula_and_accept_a_parameter():
    emb = nn.Embedding(V, D)
    head = MLMHead(emb.weight)
    with torch.no_grad():
        head.bias.normal_()
    h = fake_output().text_hidden
    t = head.transform
    expected = F.linear(F.layer_norm(F.gelu(t.dense(h)), (D,), t.layer_norm.weight, t.layer_norm.bias, 1e-12),
                        emb.weight, head.bias)
    torch.testing.assert_close(head(h), expected)


def test_mlm_gathered_logits_equal_full_logits_at_masked_positions():
    head = MLMHead(nn.Embedding(V, D))
    h = fake_output().text_hidden
    labels = mlm_labels()
    gathered, gathered_labels = head.masked_logits(h, labels)
    sel = labels != IGNORE_INDEX
    assert gathered.shape == (int(sel.sum()), V)
    torch.testing.assert_close(gathered, head(h)[sel])
    assert torch.equal(gathered_labels, labels[sel])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gathering_by_flat_index_equals_boolean_mask_indexing(seed):
    """index_select at the collate's flat positions = x[mask], values and gradients, for any mask
    (random, empty, full): the sync-free path computes exactly what boolean indexing did."""
    torch.manual_seed(seed)
    heads = PretrainHeads(nn.Embedding(V, D), D_R, P, num_region_classes=C)
    out = fake_output(seed)
    g = torch.Generator().manual_seed(seed)
    for density in (0.3, 0.0, 1.0):
        labels = torch.where(torch.rand(B, T, generator=g) < density, torch.randint(0, V, (B, T), generator=g),
                             torch.full((B, T), IGNORE_INDEX))
        mask = torch.rand(B, R - 1, generator=g) < density
        text = out.text_hidden.clone().requires_grad_()
        regions = out.region_hidden[:, 1:].clone().requires_grad_()
        sel = labels != IGNORE_INDEX
        ref_mlm = heads.mlm._decode(text[sel])
        ref_mrc = heads.mrc.decoder(heads.mrc.transform(regions[mask]))
        mlm, mlm_labels = heads.mlm.masked_logits(text, labels, flat_index(sel))
        mrc = heads.mrc.masked_logits(regions, mask, flat_index(mask))
        assert mlm.shape == ref_mlm.shape == (int(sel.sum()), V) and mrc.shape == ref_mrc.shape
        torch.testing.assert_close(mlm, ref_mlm)
        torch.testing.assert_close(mrc, ref_mrc)
        assert torch.equal(mlm_labels, labels[sel])
        w_mlm, w_mrc = torch.randn(mlm.shape, generator=g), torch.randn(mrc.shape, generator=g)
        got = torch.autograd.grad((mlm * w_mlm).sum() + (mrc * w_mrc).sum(), (text, regions))
        ref = torch.autograd.grad((ref_mlm * w_mlm).sum() + (ref_mrc * w_mrc).sum(), (text, regions))
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b)


def test_flat_index_and_bad_index():
    mask = torch.tensor([[False, True, True], [True, False, False]])
    assert flat_index(mask).tolist() == [1, 2, 3]
    assert flat_index(torch.zeros(2, 3, dtype=torch.bool)).shape == (0,)
    head = MLMHead(nn.Embedding(V, D))
    with pytest.raises(ValueError, match="MLM index"):
        head.masked_logits(torch.randn(B, T, D), mlm_labels(), torch.zeros(2, 1, dtype=torch.long))
    heads = PretrainHeads(nn.Embedding(V, D), D_R, P, num_region_classes=C)
    with pytest.raises(ValueError, match="mrc_index needs mrc_target_mask"):
        heads(fake_output(), mrc_index=torch.zeros(1, dtype=torch.long))


def test_mlm_bad_inputs_raise():
    with pytest.raises(ValueError, match="nn.Embedding"):
        MLMHead(torch.randn(V, D))  # a plain tensor cannot be tied (and would not be trained)
    head = MLMHead(nn.Embedding(V, D))
    with pytest.raises(ValueError, match=r"\(B, T, 16\)"):
        head(torch.randn(B, T, D + 1))
    with pytest.raises(ValueError, match="labels"):
        head.masked_logits(torch.randn(B, T, D), torch.zeros(B, T + 1, dtype=torch.long))


def test_tie_survives_deepcopy_and_dtype_conversion_of_the_owner():
    owner = nn.ModuleDict({"emb": nn.Embedding(V, D)})
    owner["heads"] = PretrainHeads(owner["emb"], D_R, P, num_region_classes=C)
    clone = copy.deepcopy(owner)
    assert clone["heads"].mlm.decoder_weight is clone["emb"].weight
    owner.double()
    assert owner["heads"].mlm.decoder_weight.dtype == torch.float64
    assert owner["heads"].mlm.decoder_weight is owner["emb"].weight


def test_mrc_reads_real_regions_only_and_gathers_correctly():
    head = MRCHead(D_R, C)
    out = fake_output()
    full = head(out.region_hidden[:, 1:])
    assert full.shape == (B, R - 1, C)
    mask = torch.zeros(B, R - 1, dtype=torch.bool)
    mask[0, 0] = mask[2, 3] = mask[2, 1] = True
    torch.testing.assert_close(head.masked_logits(out.region_hidden[:, 1:], mask), full[mask])
    with pytest.raises(ValueError, match="region_hidden"):
        head(out.region_hidden[:, 1:, :-1])
    with pytest.raises(ValueError, match="bool"):
        head.masked_logits(out.region_hidden[:, 1:], mask.long())


def test_pretrain_heads_shapes_region_width_and_gradients():
    emb = nn.Embedding(V, D)
    heads = PretrainHeads(emb, region_hidden_size=D_R, pooler_size=P, num_region_classes=C)
    out = fake_output()
    labels = mlm_labels()
    mask = torch.zeros(B, R - 1, dtype=torch.bool)
    mask[1, 2] = True
    logits = heads(out, mlm_labels=labels, mrc_target_mask=mask)
    assert logits.mlm.shape == (int((labels != IGNORE_INDEX).sum()), V)
    assert logits.mrc.shape == (1, C) and logits.itm.shape == (B, 2)
    full = heads(out)
    assert full.mlm.shape == (B, T, V) and full.mrc.shape == (B, R - 1, C) and full.mlm_labels is None
    torch.testing.assert_close(full.mrc[mask], logits.mrc)
    (logits.mlm.sum() + logits.mrc.sum() + logits.itm.sum()).backward()
    for name, p in list(heads.named_parameters()) + [("emb", emb.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pretrain_heads_ignore_the_img_token():
    heads = PretrainHeads(nn.Embedding(V, D), D_R, P, num_region_classes=C).eval()
    out = fake_output()
    a = heads(out).mrc
    out.region_hidden[:, 0] += 100.0
    torch.testing.assert_close(heads(out).mrc, a)


def test_vqa_head_matches_formula():
    head = VQAHead(P, num_answers=A, hidden_size=8).eval()  # eval: no dropout
    out = fake_output()
    h = F.gelu(head.dense(out.pooled))
    expected = head.classifier(F.layer_norm(h, (8,), head.layer_norm.weight, head.layer_norm.bias, 1e-12))
    logits = head(out)
    assert logits.shape == (B, A)
    torch.testing.assert_close(logits, expected)


def test_retrieval_and_refexp_heads():
    out = fake_output()
    ret = RetrievalHead(P).eval()
    torch.testing.assert_close(ret(out), out.pooled @ ret.scorer.weight[0] + ret.scorer.bias[0])
    ref = RefExpHead(D_R).eval()
    scores = ref(out)
    assert scores.shape == (B, R - 1)
    torch.testing.assert_close(scores, out.region_hidden[:, 1:] @ ref.scorer.weight[0] + ref.scorer.bias[0])
    with pytest.raises(ValueError, match="region_hidden"):
        RefExpHead(D)(out)


def test_task_heads_drop_their_input_like_volta():
    # VOLTA's BertForVLTasks applies Dropout(0.1) to pooled / region states before every task head.
    out = fake_output()
    torch.manual_seed(0)
    for head in (VQAHead(P, num_answers=A, hidden_size=8), RetrievalHead(P), RefExpHead(D_R)):
        assert head.dropout.p == pytest.approx(0.1)
        train_a, train_b = head.train()(out), head(out)
        assert not torch.equal(train_a, train_b)  # a new mask each call
        torch.testing.assert_close(head.eval()(out), head(out))
    assert build_head("vqa", pooler_size=P, num_answers=A, dropout=0.0).dropout.p == 0.0


def test_build_head():
    assert isinstance(build_head("vqa", pooler_size=P, num_answers=A), VQAHead)
    assert build_head("vqa", pooler_size=P, num_answers=A).classifier.out_features == A
    assert isinstance(build_head("retrieval", pooler_size=P), RetrievalHead)
    assert isinstance(build_head("refexp", pooler_size=P, region_hidden_size=D_R), RefExpHead)
    with pytest.raises(ValueError, match="region_hidden_size"):
        build_head("refexp", pooler_size=P)
    with pytest.raises(ValueError, match="unknown task"):
        build_head("nlvr2", pooler_size=P)
    with pytest.raises(ValueError, match="positive"):
        build_head("vqa", pooler_size=0)


def test_heads_on_a_real_tiny_model_train_the_shared_embedding():
    synthetic = pytest.importorskip("switchbert.data.random_batch")
    from switchbert.heads.losses import ignore_mismatched, pretrain_loss, refexp_bce_loss

    from switchbert import create_model

    model = create_model("switchbert-tiny")
    cfg = model.config
    batch = synthetic.random_batch(cfg, batch_size=4, num_text=10, num_regions=6)
    out = model(batch)
    word_emb = next(m for name, m in model.named_modules() if name.endswith("word_embeddings"))
    heads = PretrainHeads(word_emb, cfg.region_hidden_size_, cfg.pooler_size)
    itm = torch.tensor([1, 0, 1, 1])
    labels = torch.full(batch.text_ids.shape, IGNORE_INDEX)
    labels[:, 1] = batch.text_ids[:, 1]
    mrc_mask = batch.region_mask.clone()
    labels, mrc_mask = ignore_mismatched(itm, labels, mrc_mask)
    probs = torch.softmax(torch.randn(*mrc_mask.shape, 1601), -1)
    loss = pretrain_loss(heads(out, labels, mrc_mask), itm_labels=itm, mrc_target_probs=probs)
    ref = build_head("refexp", pooler_size=cfg.pooler_size, region_hidden_size=cfg.region_hidden_size_)
    ref_logits = ref(out)
    assert ref_logits.shape == batch.region_mask.shape
    total = loss.total + refexp_bce_loss(ref_logits, torch.rand(ref_logits.shape), out.region_mask[:, 1:])
    total.backward()
    assert torch.isfinite(total)
    assert word_emb.weight.grad is not None and word_emb.weight.grad.abs().sum() > 0
    for name, p in heads.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
