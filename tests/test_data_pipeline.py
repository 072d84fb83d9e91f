"""The input pipeline's bytes and their equivalence: float16 region features and MRC targets for the
target regions only give the same losses as the float32, dense (B, N, C) batches they replaced."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import switchbert
from switchbert.data import (CaptionPairsDataset, RetrievalTrainDataset, load_tokenizer, make_dataloader,
                             open_feature_store, write_store)
from switchbert.data.errors import DataError
from switchbert.data.features import RegionRecord, validate_record
from switchbert.data.synth import generate
from switchbert.heads import PretrainHeads
from switchbert.heads.losses import ignore_mismatched, pretrain_loss

FEAT, CLASSES = 64, 20


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_pipeline")
    return root, generate(root, 40, seed=5, feat_dim=FEAT, num_classes=CLASSES, questions_per_image=1)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _dataset(synth, tok, **kw):
    root, m = synth
    return CaptionPairsDataset(root / m["cc_train"], open_feature_store(root / m["features"]), tok,
                               max_text_len=12, seed=0, **kw)


def _dense_reference(ds, examples, N):
    """What the collate produced before: every region's distribution, float32, (B, N, C)."""
    out = torch.zeros(len(examples), N, CLASSES)
    for i, e in enumerate(examples):
        rec = ds.store.get(e.image_id)
        n = e.regions.num_regions
        out[i, :n] = torch.from_numpy(rec.cls_prob[:n])
    return out


def test_compact_batch_gives_the_dense_batchs_loss(synth, tok):
    ds = _dataset(synth, tok)
    examples = [ds[i] for i in range(len(ds))]
    batch, labels = ds.collate(examples)
    assert batch.region_feats.dtype == torch.float16 and labels.mrc_targets.dtype == torch.float16
    dense = _dense_reference(ds, examples, batch.region_mask.shape[1])
    torch.manual_seed(0)
    model = switchbert.create_model("uniter-tiny").eval()
    c = model.config
    heads = PretrainHeads(model.get_word_embeddings(), c.region_hidden_size_, c.pooler_size,
                          num_region_classes=CLASSES).eval()
    with torch.no_grad():
        out16 = model(batch)
        out32 = model(replace(batch, region_feats=batch.region_feats.float()))
        assert torch.equal(out16.pooled, out32.pooled)  # widened on the device: the same numbers
        mlm, mrc = ignore_mismatched(labels.itm_labels, labels.mlm_labels, labels.mrc_mask)
        logits = heads(out16, mlm_labels=mlm, mrc_target_mask=mrc, mlm_index=labels.mlm_index,
                       mrc_index=labels.mrc_index)
        compact = pretrain_loss(logits, itm_labels=labels.itm_labels, mrc_target_probs=labels.mrc_targets)
        before = pretrain_loss(logits, itm_labels=labels.itm_labels, mrc_target_probs=dense)
        assert float(compact.mrc) > 0
        torch.testing.assert_close(compact.mrc, before.mrc, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(compact.total, before.total, rtol=1e-6, atol=1e-7)
        # Full (ungathered) MRC logits with the compact targets: the same loss again.
        full = heads(out16, mlm_labels=mlm)
        full_loss = pretrain_loss(full, itm_labels=labels.itm_labels, mrc_target_probs=labels.mrc_targets,
                                  mrc_target_mask=mrc)
        torch.testing.assert_close(full_loss.mrc, before.mrc, rtol=1e-5, atol=1e-6)
    # The dense view of the compact targets is the old tensor at the targets and 0 elsewhere.
    view = labels.dense_mrc_targets()
    target = labels.mrc_mask & (labels.itm_labels == 1)[:, None]
    assert torch.equal(view[target], dense[target]) and not view[~target].any()


def test_gathered_targets_must_match_the_gathered_logits(synth, tok):
    ds = _dataset(synth, tok)
    batch, labels = ds.collate([ds[i] for i in range(8)])
    model = switchbert.create_model("uniter-tiny").eval()
    c = model.config
    heads = PretrainHeads(model.get_word_embeddings(), c.region_hidden_size_, c.pooler_size, num_region_classes=CLASSES)
    with torch.no_grad():
        logits = heads(model(batch), mlm_labels=labels.mlm_labels, mrc_target_mask=labels.mrc_mask,
                       mrc_index=labels.mrc_index)
        with pytest.raises(ValueError, match="rows"):
            pretrain_loss(logits, itm_labels=labels.itm_labels, mrc_target_probs=labels.mrc_targets[:-1])


def _record(n, feat_dim=2048, classes=1601, seed=0, iid="1"):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(20, 300, (n, 2))], 1).astype(np.float32)
    probs = rng.dirichlet(np.ones(classes), n).astype(np.float32)
    return RegionRecord(iid, np.maximum(rng.standard_normal((n, feat_dim), dtype=np.float32), 0), boxes, 640.0,
                        640.0, probs)


def test_pretraining_sample_at_36x2048x1601_is_under_170kb(tmp_path, tok):
    # The goal: <= 170 KB per pretraining sample at 36 regions x 2048-d with 1601 classes
    # (about 530 KB with float32 features and dense float32 MRC targets).
    ids = [str(i) for i in range(64)]
    write_store(tmp_path / "s", (_record(36, seed=i, iid=iid) for i, iid in enumerate(ids)), "fast")
    (tmp_path / "cc.json").write_text("{" + ",".join(f'"{i}": "a red cube left of a blue sphere"' for i in ids) + "}")
    ds = CaptionPairsDataset(tmp_path / "cc.json", open_feature_store(tmp_path / "s"), tok, seed=0)
    batch, labels = ds.collate([ds[i] for i in range(len(ds))])
    tensors = [*vars(batch).values(), *vars(labels).values()]
    per_sample = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / len(ds)
    assert per_sample <= 170_000, per_sample
    assert per_sample >= 36 * 2048 * 2  # the float16 features themselves


def test_float16_records_are_checked_like_float32(tmp_path):
    good = _record(3, feat_dim=8, classes=5)
    half = replace(good, features=good.features.astype(np.float16), cls_prob=good.cls_prob.astype(np.float16))
    validate_record(half, tmp_path, 8, 5)
    signed = replace(half, features=-half.features)  # negative features are fine, only non-finite are not
    validate_record(signed, tmp_path, 8, 5)
    zero = half.cls_prob.copy()
    zero[0, 0] = -0.0
    validate_record(replace(half, cls_prob=zero), tmp_path, 8, 5)
    for bad_value in (np.nan, np.inf, -np.inf):
        f = half.features.copy()
        f[1, 2] = bad_value
        with pytest.raises(DataError, match="NaN/inf"):
            validate_record(replace(half, features=f), tmp_path, 8, 5)
        with pytest.raises(DataError, match="NaN/inf"):
            validate_record(replace(half, features=-f), tmp_path, 8, 5)
    for bad_value in (np.nan, np.inf, -0.5):
        p = half.cls_prob.copy()
        p[2, 1] = bad_value
        with pytest.raises(DataError, match="cls_prob"):
            validate_record(replace(half, cls_prob=p), tmp_path, 8, 5)


def test_store_reads_native_float16_or_widened_float32(synth):
    root, m = synth
    store = open_feature_store(root / m["features"])
    iid = store.ids()[0]
    wide, native = store.get(iid), store.get(iid, native=True)
    assert wide.features.dtype == np.float32 and native.features.dtype == np.float16
    assert native.cls_prob.dtype == np.float16
    np.testing.assert_array_equal(native.features.astype(np.float32), wide.features)
    np.testing.assert_array_equal(native.cls_prob.astype(np.float32), wide.cls_prob)


def test_worker_batches_equal_main_process_batches(synth, tok):
    # Collated into shared memory in the worker; the same tensors as in the main process.
    ds = _dataset(synth, tok)
    main = list(make_dataloader(ds, 8, num_workers=0))
    worker = list(make_dataloader(ds, 8, num_workers=1))
    assert len(main) == len(worker)
    for (b0, l0), (b1, l1) in zip(main, worker):
        assert torch.equal(b0.region_feats, b1.region_feats) and b1.region_feats.dtype == torch.float16
        assert torch.equal(l0.mrc_targets, l1.mrc_targets) and torch.equal(l0.mrc_index, l1.mrc_index)
        assert torch.equal(b0.text_ids, b1.text_ids) and torch.equal(l0.mlm_labels, l1.mlm_labels)


def test_retrieval_sample_decodes_each_image_once(synth, tok):
    # 4 candidates: (caption, own image) x 3 and (caption, random image): two reads, not four.
    root, m = synth
    store = open_feature_store(root / m["features"])
    ds = RetrievalTrainDataset(root / m["flickr_train"], store, tok, cache_path=None)
    calls = []
    get = store.get
    store.get = lambda iid, *a, **k: calls.append(iid) or get(iid, *a, **k)
    ex = ds[0]
    assert len(calls) == 2 and len(ex.regions) == 4
    assert ex.regions[0] is ex.regions[1] is ex.regions[3]


# ------------------------------------------------------------- indices without a Python object per item
def test_string_table_and_id_index():
    from switchbert.data.index import IdIndex, Ragged, StringTable

    ids = ["10", "1", "b\u00e9", "100", "x" * 5, "2"]
    table = StringTable.from_strings(ids)
    assert len(table) == 6 and table[2] == "b\u00e9" and table[-1] == "2" and table[1:3] == ids[1:3]
    assert table == ids and list(table) == ids and table == StringTable.from_joined("\n".join(ids).encode())
    with pytest.raises(IndexError):
        table[6]
    index = IdIndex(table)
    assert index.positions(["1", "10", "100", "2", "b\u00e9", "xxxxx"]).tolist() == [1, 0, 3, 5, 2, 4]
    # absent: a prefix, an extension, longer than every id, empty
    assert index.positions(["0", "1000", "x" * 9, "", "3"]).tolist() == [-1] * 5
    assert "100" in index and "1000" not in index and "x" * 9 not in index
    assert StringTable.from_joined(b"") == [] and IdIndex(StringTable.from_strings([])).position("1") == -1
    rag = Ragged.from_rows([[1, 2], [], [3, 4, 5]], np.uint16)
    assert rag.row(2).tolist() == [3, 4, 5] and rag.row(1).tolist() == []
    taken = rag.take(np.array([2, 0, 2]))
    assert [taken.row(i).tolist() for i in range(3)] == [[3, 4, 5], [1, 2], [3, 4, 5]]


def test_store_ids_and_membership(synth):
    root, m = synth
    store = open_feature_store(root / m["features"])
    ids = store.ids()
    assert isinstance(ids, list) and len(ids) == len(store) == 40 and all(i in store for i in ids)
    assert "no-such-image" not in store and store.contains_many([ids[3], "nope"]).tolist() == [True, False]
    with pytest.raises(DataError, match="missing image id"):
        store.get("nope")


def test_captions_tokenised_once_equal_per_sample_encoding(synth, tok, tmp_path):
    from switchbert.data.tokenizer import encode
    from switchbert.data.tokens import caption_tokens, with_specials

    ds = _dataset(synth, tok)
    for i in range(len(ds)):
        assert with_specials(ds.tokens.row(i)).tolist() == encode(tok, ds.captions[i], 12)
    cache = tmp_path / "tokens.npz"
    first = caption_tokens(ds.captions, tok, 12, cache)
    assert cache.exists()
    again = caption_tokens(ds.captions, tok, 12, cache)  # read back
    assert np.array_equal(first.values, again.values) and np.array_equal(first.offsets, again.offsets)
    other = caption_tokens(ds.captions, tok, 5, cache)  # another cap: the cache does not match, rebuilt
    assert max(other.lengths()) <= 3


def test_pair_batches_equal_the_dataloader_batches(synth, tok):
    # Retrieval evaluation builds its batches from each image read once and the captions tokenised once;
    # they must be the batches the per-pair DataLoader path produced, so every score stays the same.
    from switchbert.data import RetrievalEvalDataset
    from switchbert.data.retrieval import iter_pair_batches

    root, m = synth
    ds = RetrievalEvalDataset(root / m["flickr_test"], open_feature_store(root / m["features"]), tok)
    pairs = [i * ds.num_captions + c for i in range(ds.num_images) for c in range(ds.num_captions)][3:]
    reads = []
    get = ds.store.get
    ds.store.get = lambda iid, *a, **k: reads.append(iid) or get(iid, *a, **k)
    fast = list(iter_pair_batches(ds, pairs, 7))
    assert len(reads) == ds.num_images  # each image once
    ds.store.get = get
    slow = list(make_dataloader(ds, 7, sampler=pairs))
    assert len(fast) == len(slow)
    for (b0, l0), (b1, l1) in zip(slow, fast):
        for name in ("text_ids", "text_mask", "region_boxes", "region_mask"):
            x, y = getattr(b0, name), getattr(b1, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
        # features widened once per image (the model widens float16 first thing): the same numbers
        assert b1.region_feats.dtype == torch.float32 and torch.equal(b0.region_feats.float(), b1.region_feats)
        assert torch.equal(l0.caption_index, l1.caption_index) and torch.equal(l0.image_index, l1.image_index)


def test_cls_prob_rows_equal_the_full_read_in_every_format(tmp_path):
    records = [_record(5, feat_dim=8, classes=6, seed=i, iid=str(i)) for i in range(3)]
    rows = np.array([4, 0, 2])
    for fmt in ("fast", "volta"):
        write_store(tmp_path / fmt, records, fmt)
        store = open_feature_store(tmp_path / fmt)
        full = store.get("1", native=True).cls_prob
        got = store.cls_prob_rows("1", rows)
        assert got.dtype == full.dtype and np.array_equal(got, full[rows])
        assert store.cls_prob_rows("2", np.zeros(0, np.int64)).shape == (0, 6)
        without = store.get("1", native=True, cls_prob=False)
        assert without.cls_prob is None and np.array_equal(without.features, store.get("1", native=True).features)
    bad = replace(records[0], cls_prob=records[0].cls_prob.copy())
    bad.cls_prob[3, 1] = np.nan  # a row no sample asks for still fails the record
    write_store(tmp_path / "bad", [bad], "fast")
    with pytest.raises(DataError, match="cls_prob contains NaN"):
        open_feature_store(tmp_path / "bad").cls_prob_rows("0", np.array([0]))


def test_pretraining_masks_are_unchanged(synth, tok):
    # The corruption is still the same function of (seed, epoch, index): the generator is drawn in the
    # same order as before captions were tokenised once and distributions read by row.
    from switchbert.data.masking import mask_regions, mask_tokens, sample_itm_negative, sample_rng
    from switchbert.data.tokenizer import encode

    ds = _dataset(synth, tok)
    ds.set_epoch(2)
    for index in range(len(ds)):
        ex = ds[index]
        rng = sample_rng(0, 2, index)
        other = sample_itm_negative(rng, index, len(ds), 0.5)
        cap = index if other is None else other
        text, labels = mask_tokens(np.asarray(encode(tok, ds.captions[cap], 12)), rng, 0.15)
        targets, _ = mask_regions(ex.regions.num_regions, rng, 0.15, 0.9)
        assert np.array_equal(ex.text_ids, text)
        assert np.array_equal(ex.mrc_mask, targets if other is None else np.zeros_like(targets))
        rec = ds.store.get(ex.image_id, native=True)
        assert np.array_equal(ex.mrc_probs, rec.cls_prob[: ex.regions.num_regions][ex.mrc_mask])


@pytest.mark.filterwarnings("ignore::switchbert.data.errors.DataWarning")
def test_caption_index_cache(synth, tok, tmp_path, monkeypatch):
    import json
    import os

    import switchbert.data.caption_index as caption_index

    root, m = synth
    captions = json.loads((root / m["cc_train"]).read_text())
    captions["999999"] = "an image the store does not hold"
    captions[next(iter(captions))] = "  "
    path = tmp_path / "cc.json"
    path.write_text(json.dumps(captions))
    store = open_feature_store(root / m["features"])
    cache = tmp_path / "cache" / "cc.index.npz"
    first = CaptionPairsDataset(path, store, tok, max_text_len=12, skip_bad=True, index_cache=cache)
    assert cache.exists() and len(first) == len(captions) - 2 and first.policy.skipped == 2

    def no_json(p):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(caption_index, "load_json", no_json)
    again = CaptionPairsDataset(path, store, tok, max_text_len=12, skip_bad=True, index_cache=cache)
    assert again.image_ids == first.image_ids and again.captions == first.captions
    assert np.array_equal(again.tokens.values, first.tokens.values) and again.policy.skipped == 2
    assert all(np.array_equal(a.text_ids, b.text_ids) for a, b in zip((first[i] for i in range(5)), (again[i] for i in range(5))))
    with pytest.raises(AssertionError, match="cache"):  # another length cap: not this cache
        CaptionPairsDataset(path, store, tok, max_text_len=10, skip_bad=True, index_cache=cache)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed: not this cache
    with pytest.raises(AssertionError, match="cache"):
        CaptionPairsDataset(path, store, tok, max_text_len=12, skip_bad=True, index_cache=cache)
    with pytest.raises(DataError, match="empty caption"):  # without skip_bad the first bad item raises
        monkeypatch.undo()
        CaptionPairsDataset(path, store, tok, max_text_len=12, index_cache=cache)


def test_shuffled_order_is_random_samplers(synth, tok):
    # PermutationSampler hands out RandomSampler's permutations (same generator, same draws), epoch
    # after epoch, without building a Python list of every index.
    from torch.utils.data import DataLoader

    ds = _dataset(synth, tok)
    ours = make_dataloader(ds, 5, shuffle=True, seed=7, collate_fn=lambda ex: [e.image_id for e in ex])
    gen = torch.Generator()
    gen.manual_seed(7)
    ref = DataLoader(range(len(ds)), batch_size=5, shuffle=True, generator=gen, collate_fn=list)
    for _ in range(3):
        order = [iid for b in ours for iid in b]
        assert order == [ds.image_ids[i] for b in ref for i in b]
    partial = iter(ours)  # an epoch broken off early, as RandomSampler's would be
    next(partial)
    del partial
    ref_partial = iter(ref)
    next(ref_partial)
    del ref_partial
    assert [iid for b in ours for iid in b] == [ds.image_ids[i] for b in ref for i in b]


def _assert_same_batch(got, want):
    for a, b in zip(got, want):
        for name, x in vars(b).items():
            y = getattr(a, name)
            if isinstance(x, torch.Tensor):
                assert y.dtype == x.dtype and torch.equal(y, x), name
            else:
                assert y == x, name


@pytest.mark.parametrize("fmt", ["fast", "volta"])
@pytest.mark.parametrize("mrc", [True, False])
def test_batch_reader_equals_the_collated_items(tmp_path, tok, fmt, mrc):
    # read_batch copies a fast store's features once, from the LMDB pages into the batch, and zeroes
    # the masked regions there; every tensor equals the per-item path's, for every store format.
    sizes = [5, 3, 7, 1, 4, 6, 2, 5]
    write_store(tmp_path / "s", [_record(n, feat_dim=8, classes=6, seed=i, iid=str(i)) for i, n in enumerate(sizes)], fmt)
    (tmp_path / "cc.json").write_text(
        "{" + ",".join(f'"{i}": "a red cube left of a blue sphere number {i}"' for i in range(len(sizes))) + "}")
    ds = CaptionPairsDataset(tmp_path / "cc.json", open_feature_store(tmp_path / "s"), tok, seed=1, mrc=mrc,
                             region_mask_prob=0.5)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        order = [5, 0, 7, 2, 3, 1, 6, 4]
        got, want = ds.read_batch(order), ds.collate([ds[i] for i in order])
        _assert_same_batch(got, want)
        if mrc:
            assert got[1].mrc_targets.shape[0] > 0  # the targets' rows were copied, not left on the pages
    # The zeroed rows are zero in the batch, the others are the store's features.
    ds.set_epoch(0)
    batch, _ = ds.read_batch(range(len(sizes)))
    zeroed = [ds._example(i, lambda iid, cls_prob: ds.store.get(iid, native=True, cls_prob=cls_prob)).zeroed
              for i in range(len(sizes))]
    assert any(z.any() for z in zeroed)
    for i, z in enumerate(zeroed):
        stored = torch.from_numpy(ds.store.get(str(i), native=True).features)
        feats = batch.region_feats[i, : sizes[i]]
        assert not feats[torch.from_numpy(z)].any() and torch.equal(feats[torch.from_numpy(~z)], stored[~z])


@pytest.mark.filterwarnings("ignore::switchbert.data.errors.DataWarning")
def test_batch_reader_skips_and_raises_as_the_items_do(tmp_path, tok):
    records = [_record(4, feat_dim=8, classes=6, seed=i, iid=str(i)) for i in range(5)]
    records[2].features[1, 3] = np.nan
    write_store(tmp_path / "s", records, "fast")
    (tmp_path / "cc.json").write_text("{" + ",".join(f'"{i}": "a blue sphere"' for i in range(5)) + "}")
    store = open_feature_store(tmp_path / "s")
    strict = CaptionPairsDataset(tmp_path / "cc.json", store, tok)
    with pytest.raises(DataError, match=r"item '2': corrupt record: features or boxes contain NaN/inf"):
        strict.read_batch([0, 2])
    lenient = CaptionPairsDataset(tmp_path / "cc.json", store, tok, skip_bad=True)
    _assert_same_batch(lenient.read_batch(range(5)), lenient.collate([lenient[i] for i in range(5)]))
    assert len(lenient.read_batch(range(5))[0].text_ids) == 4
    # Through the loader, which reads by batch, the skip is counted in the pass summary.
    calls = []
    read_batch = lenient.read_batch
    lenient.read_batch = lambda indices: calls.append(list(indices)) or read_batch(indices)
    with pytest.warns(Warning, match="1 of 5 items skipped"):
        batches = list(make_dataloader(lenient, 5))
    assert calls == [[0, 1, 2, 3, 4]] and len(batches[0][0].text_ids) == 4
    # A collate_fn of the caller's own gets the items, as before.
    calls.clear()
    items = list(make_dataloader(lenient, 5, collate_fn=lambda examples: examples))
    assert not calls and len(items[0]) == 5 and items[0][2] is None


@pytest.mark.parametrize("fmt", ["fast", "volta"])
def test_vqa_batch_reader_equals_the_collated_items_and_the_per_sample_encoding(synth, tok, tmp_path, fmt):
    # Questions are tokenised once at build; the batch path reads each image's features once and never
    # the class distributions (VQA does not use them). Same batches as the items, same ids as encode().
    from switchbert.data import VQADataset, build_answer_vocab
    from switchbert.data.tokenizer import encode

    root, m = synth
    source = open_feature_store(root / m["features"])
    write_store(tmp_path / "s", (source.get(i, native=True) for i in source.ids()), fmt)
    vqa = root / "vqa"
    ann = vqa / "v2_mscoco_train2014_annotations.json"
    ds = VQADataset(vqa / "v2_OpenEnded_mscoco_train2014_questions.json", ann, open_feature_store(tmp_path / "s"),
                    tok, build_answer_vocab([ann]), max_text_len=9)
    order = list(range(len(ds)))[::-1][:16]
    assert len(order) == 16
    got, want = ds.read_batch(order), ds.collate([ds[i] for i in order])
    _assert_same_batch(got, want)
    for i in order:
        assert ds[i].text_ids.tolist() == encode(tok, ds.items[i][2], 9) and ds[i].regions.cls_prob is None


def test_refexp_and_retrieval_read_no_class_distributions_and_refexp_tokenises_once(synth, tok):
    from switchbert.data import RefCOCODataset
    from switchbert.data.tokenizer import encode

    root, m = synth
    store = open_feature_store(root / m["features"])
    ref = RefCOCODataset(root / "refcoco+" / "refs(unc).p", root / "refcoco+" / "instances.json", store, tok,
                         "train", max_text_len=7)
    assert len(ref) > 0
    for i in range(len(ref)):
        ex = ref[i]
        assert ex.text_ids.tolist() == encode(tok, ref.items[i][3], 7) and ex.regions.cls_prob is None
    ret = RetrievalTrainDataset(root / "flickr30k" / "train.jsonl", store, tok, cache_path=None)
    assert ret._regions(0).cls_prob is None and store.num_classes  # the store has them; retrieval skips them
