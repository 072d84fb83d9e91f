"""Every dataset on the synthetic benchmark (written in the real formats), through collate and the
DataLoader; the generator's guarantees (deterministic, needs the image)."""

import json
import pickle

import numpy as np
import pytest
import torch

from switchbert.batch import Batch
from switchbert.data.vqa_answers import answer_scores
from switchbert.data import (CaptionPairsDataset, RefCOCODataset, RetrievalEvalDataset, RetrievalTrainDataset,
                             VQADataset, build_answer_vocab, load_tokenizer, make_dataloader, open_feature_store,
                             soft_score)
from switchbert.data.masking import IGNORE_INDEX
from switchbert.data.regions import box_iou
from switchbert.data.synth import generate

FEAT, CLASSES = 32, 20


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    m = generate(root, 60, seed=3, feat_dim=FEAT, num_classes=CLASSES)
    return root, m


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def _path(synth, key):
    root, m = synth
    return root / m[key]


def test_manifest_and_store(synth):
    root, m = synth
    assert json.loads((root / "manifest.json").read_text())["features"] == "features.lmdb"
    store = open_feature_store(_path(synth, "features"))
    assert store.format == "fast" and len(store) == 60 and store.feat_dim == FEAT and store.num_classes == CLASSES
    r = store.get("1")
    np.testing.assert_allclose(r.cls_prob.sum(1), 1.0, atol=2e-2)  # float16 distributions
    assert (r.features >= 0).all()  # post-ReLU like BUTD


def test_pretrain_batch(synth, tok):
    store = open_feature_store(_path(synth, "features"))
    ds = CaptionPairsDataset(_path(synth, "cc_train"), store, tok, max_text_len=12, seed=0)
    assert len(ds) == 48
    batch, labels = ds.collate([ds[i] for i in range(len(ds))])
    batch.validate(FEAT)
    B, T = batch.text_ids.shape
    N = batch.region_mask.shape[1]
    assert T <= 12 and N <= 36
    assert labels.mlm_labels.shape == (B, T) and labels.dense_mrc_targets().shape == (B, N, CLASSES)
    # Only the target regions' distributions travel, in mrc_index order, float16 as the store holds them.
    assert labels.mrc_targets.shape == (len(labels.mrc_index), CLASSES)
    assert labels.mrc_targets.dtype == torch.float16 and batch.region_feats.dtype == torch.float16
    assert labels.mrc_mask.shape == (B, N) and labels.itm_labels.shape == (B,)
    mism = labels.itm_labels == 0
    assert 0 < mism.sum() < B
    # mismatched pairs: MLM and MRC labels ignored; matched pairs: targets only on real regions
    assert (labels.mlm_labels[mism] == IGNORE_INDEX).all() and not labels.mrc_mask[mism].any()
    assert not (labels.mrc_mask & ~batch.region_mask).any()
    # mismatched captions are masked like matched ones (no [MASK] shortcut for ITM)
    assert (batch.text_ids[mism] == 103).any()
    # zeroed features only on MRC targets (matched pairs), boxes kept
    zero_rows = (batch.region_feats.abs().sum(-1) == 0) & batch.region_mask
    matched_zero = zero_rows[~mism]
    assert not (matched_zero & ~labels.mrc_mask[~mism]).any()
    assert (batch.region_boxes[zero_rows].abs().sum(-1) > 0).all()
    # MRC targets are the detector's class distribution (at every target region; 0 elsewhere)
    dense = labels.dense_mrc_targets()
    for b in range(B):
        store_rec = store.get(labels.image_ids[b])
        n = min(store_rec.num_regions, 36)
        targets = labels.mrc_mask[b, :n].numpy()
        np.testing.assert_allclose(dense[b, :n][targets].numpy(), store_rec.cls_prob[:n][targets], atol=1e-6)
        assert not dense[b][~labels.mrc_mask[b]].any()
    # The flat target positions the training step gathers by, found here on the CPU (no device sync).
    assert torch.equal(labels.mlm_index, (labels.mlm_labels != IGNORE_INDEX).flatten().nonzero().squeeze(1))
    assert torch.equal(labels.mrc_index, labels.mrc_mask.flatten().nonzero().squeeze(1))
    assert len(labels.mlm_index) > 0 and len(labels.mrc_index) > 0
    # An example marked mismatched whose labels were not blanked: its targets are left out, as
    # losses.ignore_mismatched drops them in the step.
    examples = [ds[i] for i in range(8)]
    first = next(i for i, e in enumerate(examples) if e.itm_label == 1 and e.mrc_mask.any())
    examples[first].itm_label = 0
    _, relabelled = ds.collate(examples)
    T2, N2 = relabelled.mlm_labels.shape[1], relabelled.mrc_mask.shape[1]
    assert not ((relabelled.mlm_index // T2 == first).any() or (relabelled.mrc_index // N2 == first).any())
    assert ((relabelled.mlm_labels[first] != IGNORE_INDEX).any() and relabelled.mrc_mask[first].any())


def test_pretrain_deterministic_across_workers(synth, tok):
    store = open_feature_store(_path(synth, "features"))
    ds = CaptionPairsDataset(_path(synth, "cc_train"), store, tok, seed=7)

    def run(workers):
        dl = make_dataloader(ds, 8, shuffle=True, num_workers=workers, seed=1)
        return [(b.text_ids, b.region_feats, l.mlm_labels, l.itm_labels) for b, l in dl]

    a, b = run(0), run(2)
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            assert torch.equal(u, v)
    ds.set_epoch(1)
    c = run(0)
    assert any(not torch.equal(x[2], y[2]) for x, y in zip(a, c)), "a new epoch draws new masks"


def test_vqa_training_targets_are_normalised_soft_scores(synth, tok):
    anns = [_path(synth, "vqa_train_annotations"), _path(synth, "vqa_val_annotations")]
    vocab = build_answer_vocab(anns)
    store = open_feature_store(_path(synth, "features"))
    ds = VQADataset(_path(synth, "vqa_val_questions"), anns[1], store, tok, vocab, max_text_len=23)
    batch, labels = ds.collate([ds[i] for i in range(len(ds))])
    batch.validate(FEAT)
    assert labels.scores.shape == (len(ds), len(vocab))
    raw = {a["question_id"]: a for a in json.loads(anns[1].read_text())["annotations"]}
    for row in range(0, len(ds), 7):
        gts = [x["answer"] for x in raw[int(labels.question_ids[row])]["answers"]]
        # Training targets always normalise (answer_scores); the evaluation rule is soft_score.
        targets = answer_scores(gts)
        for j, ans in enumerate(vocab.answers):
            assert labels.scores[row, j].item() == pytest.approx(targets.get(ans, 0.0), abs=1e-6)
    test = VQADataset(_path(synth, "vqa_val_questions"), None, store, tok, vocab)  # test split: no targets
    assert test.collate([test[0]])[1].scores.sum() == 0


def test_retrieval_train_tuples(synth, tok, tmp_path):
    store = open_feature_store(_path(synth, "features"))
    cache = tmp_path / "hard.npz"
    ds = RetrievalTrainDataset(_path(synth, "flickr_train"), store, tok, hard_k=3, cache_path=cache)
    assert cache.exists() and len(ds) == 48 * 5
    again = RetrievalTrainDataset(_path(synth, "flickr_train"), store, tok, hard_k=3, cache_path=cache)
    np.testing.assert_array_equal(ds.hard_pool, again.hard_pool)
    ex = ds[11]
    img = ds.caption_image[11]
    assert np.array_equal(ex.text_ids[0], ex.text_ids[2])  # random image keeps the caption
    caps, imgs = ex.pair_captions, ex.pair_images
    assert caps[0] == caps[2] == 11 and imgs == (img, img, imgs[2], img) and imgs[2] != img
    assert ds.caption_image[caps[1]] != img  # random caption of another image
    assert ds.caption_image[caps[3]] in ds.hard_pool[img]  # hard caption from a nearest neighbour
    np.testing.assert_array_equal(ex.text_ids[3], ds.captions[caps[3]])
    np.testing.assert_array_equal(ex.regions[0].features, ex.regions[1].features)
    np.testing.assert_array_equal(ex.regions[0].features, ex.regions[3].features)
    assert not np.array_equal(ex.regions[0].features, ex.regions[2].features)
    assert img not in ds.hard_pool[img]
    batch, labels = ds.collate([ds[i] for i in range(5)])
    batch.validate(FEAT)
    assert batch.batch_size == 20 and labels.targets.tolist() == [0] * 5 and labels.num_candidates == 4


def test_hard_negatives_are_nearest_by_mean_features(synth, tok):
    from switchbert.data.retrieval import mean_region_features, nearest_neighbours

    store = open_feature_store(_path(synth, "features"))
    ids = store.ids()[:20]
    means = mean_region_features(store, ids)
    nn = nearest_neighbours(means, 3)
    v = means / np.linalg.norm(means, axis=1, keepdims=True)
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    np.testing.assert_array_equal(nn, np.argsort(-sim, axis=1, kind="stable")[:, :3])


def test_retrieval_eval_covers_every_pair(synth, tok):
    store = open_feature_store(_path(synth, "features"))
    ds = RetrievalEvalDataset(_path(synth, "flickr_test"), store, tok)
    assert len(ds) == ds.num_captions * ds.num_images == 30 * 6
    dl = make_dataloader(ds, 64)
    seen = torch.zeros(ds.num_captions, ds.num_images, dtype=torch.long)
    for batch, labels in dl:
        seen[labels.caption_index, labels.image_index] += 1
    assert (seen == 1).all()
    assert (np.bincount(ds.caption_image) == 5).all()


@pytest.mark.parametrize("split", ["train", "val", "testA", "testB"])
def test_refcoco_iou_targets(synth, tok, split):
    store = open_feature_store(_path(synth, "features"))
    ds = RefCOCODataset(_path(synth, "refcoco_refs"), _path(synth, "refcoco_instances"), store, tok, split)
    batch, labels = ds.collate([ds[i] for i in range(len(ds))])
    batch.validate(FEAT)
    assert labels.iou.shape == batch.region_mask.shape
    assert (labels.iou[~labels.region_mask] == 0).all()
    for b in range(0, len(ds), 5):
        n = int(batch.region_mask[b].sum())
        expect = box_iou(labels.region_boxes_px[b, :n].numpy(), labels.target_boxes[b].numpy())
        np.testing.assert_allclose(labels.iou[b, :n].numpy(), expect, rtol=1e-6)
    # the detector saw every object: its best region overlaps the target (accuracy is achievable)
    assert (labels.iou.max(1).values > 0.5).float().mean() == 1.0


def test_synth_deterministic_and_needs_the_image(tmp_path):
    a = generate(tmp_path / "a", 200, seed=11, feat_dim=8, num_classes=12)
    b = generate(tmp_path / "b", 200, seed=11, feat_dim=8, num_classes=12)
    for key in ("vqa_train_annotations", "cc_train", "flickr_test", "refcoco_instances"):
        assert (tmp_path / "a" / a[key]).read_bytes() == (tmp_path / "b" / b[key]).read_bytes()
    ra, rb = (pickle.loads((tmp_path / d / "refcoco+" / "refs(unc).p").read_bytes()) for d in "ab")
    assert ra == rb
    sa, sb = open_feature_store(tmp_path / "a" / "features.lmdb"), open_feature_store(tmp_path / "b" / "features.lmdb")
    for iid in ("1", "77", "200"):
        np.testing.assert_array_equal(sa.get(iid).features, sb.get(iid).features)
    # the best text-only rule is far from the ~90% the annotators' answers allow
    assert a["stats"]["text_only_vqa_accuracy"] < 0.55
    assert a["stats"]["scene_oracle_vqa_accuracy"] > 0.9  # the image answers what the text cannot
    assert a["stats"]["question_types"].get("rel_color", 0) > 0.05 * 200 * 5
    c = generate(tmp_path / "c", 200, seed=12, feat_dim=8, num_classes=12)
    assert (tmp_path / "c" / c["cc_train"]).read_bytes() != (tmp_path / "a" / a["cc_train"]).read_bytes()


def test_batch_pin_and_to(synth, tok):
    store = open_feature_store(_path(synth, "features"))
    ds = CaptionPairsDataset(_path(synth, "cc_valid"), store, tok)
    batch, labels = ds.collate([ds[0], ds[1]])
    assert isinstance(batch, Batch)
    moved = labels.to("cpu")
    assert torch.equal(moved.mlm_labels, labels.mlm_labels) and moved.image_ids == labels.image_ids
