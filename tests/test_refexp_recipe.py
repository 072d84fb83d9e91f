"""RefCOCO+ recipe and bad referred boxes.

Facts from VOLTA's code (e-bug/volta, ``volta/datasets/refer_expression_dataset.py`` and
``volta/task_utils.py``; its controlled ``config_tasks/ctrl_trainval_tasks.yml``): the IoU has
pixel-inclusive sides (``x2 - x1 + 1``); the training target is the raw IoU of the detected regions
(no threshold, no ground-truth box: its ``features_h5path2`` is empty); the loss is
``BCEWithLogitsLoss(reduction="mean")`` over (B, R) times R, with padded regions at logit -10000.
ViLBERT multi-task zeroes IoU below 0.5 and appends ground-truth-box regions when training.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from switchbert.data import RefCOCODataset, load_tokenizer, open_feature_store
from switchbert.data.synth import generate
from switchbert.data.errors import DataError
from switchbert.data.refcoco import box_iou_volta, iou_target, region_iou
from switchbert.data.regions import box_iou
from switchbert.heads.losses import refexp_bce_loss

FEAT, CLASSES = 16, 10


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return root, generate(root, 40, seed=5, feat_dim=FEAT, num_classes=CLASSES)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_volta_iou_is_pixel_inclusive():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 9, 9]], dtype=np.float32)
    target = np.array([5, 5, 15, 15], dtype=np.float32)
    # sides of 11 pixels, an overlap of 6 x 6: 36 / (121 + 121 - 36)
    np.testing.assert_allclose(box_iou_volta(boxes, target), [36 / 206, 1.0, 0.0, 25 / (100 + 121 - 25)], rtol=1e-6)
    np.testing.assert_allclose(region_iou(boxes, target, "continuous"), box_iou(boxes, target))
    assert region_iou(boxes[:1], target, "continuous")[0] == pytest.approx(25 / 175)
    with pytest.raises(ValueError, match="unknown IoU convention"):
        region_iou(boxes, target, "coco")


def test_threshold_target():
    iou = np.array([0.1, 0.49999, 0.5, 0.9], dtype=np.float32)
    np.testing.assert_array_equal(iou_target(iou, "iou"), iou)
    np.testing.assert_allclose(iou_target(iou, "iou_0.5"), [0, 0, 0.5, 0.9])


def test_volta_loss_scale_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    B, R = 3, 6
    logits, targets = torch.randn(B, R, generator=g), torch.rand(B, R, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    targets = targets * mask
    # VOLTA: padded logits get -10000, BCE mean over all B*R entries, times R
    volta_logits = logits + (~mask).float() * -10000.0
    volta = F.binary_cross_entropy_with_logits(volta_logits, targets, reduction="mean") * R
    assert refexp_bce_loss(logits, targets, mask, reduction="volta").item() == pytest.approx(volta.item(), rel=1e-6)
    per_region = refexp_bce_loss(logits, targets, mask)
    assert per_region.item() == pytest.approx(volta.item() * B / mask.sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        refexp_bce_loss(logits, targets, mask, reduction="sum")


def _paths(synth, key):
    root, m = synth
    return root / m[key]


def test_dataset_targets_conventions_and_gt_regions(synth, tok):
    store = open_feature_store(_paths(synth, "features"))
    refs, inst = _paths(synth, "refcoco_refs"), _paths(synth, "refcoco_instances")
    ds = RefCOCODataset(refs, inst, store, tok, "train", iou="volta", target="iou_0.5")
    _, labels = ds.collate([ds[i] for i in range(min(len(ds), 8))])
    n = labels.region_mask.sum(1)
    for b in range(len(n)):
        k = int(n[b])
        expect = box_iou_volta(labels.region_boxes_px[b, :k].numpy(), labels.target_boxes[b].numpy())
        np.testing.assert_allclose(labels.iou[b, :k].numpy(), expect, rtol=1e-6)
        np.testing.assert_allclose(labels.target[b, :k].numpy(), np.where(expect < 0.5, 0, expect), rtol=1e-6)
    # Appending a second store's regions (the same store here): twice the candidates, targets over all.
    with_gt = RefCOCODataset(refs, inst, store, tok, "train", iou="volta", gt_store=store)
    ex, ex_gt = ds[0], with_gt[0]
    assert ex_gt.regions.num_regions == 2 * ex.regions.num_regions
    np.testing.assert_allclose(ex_gt.iou, np.concatenate([ex.iou, ex.iou]))


def _bad_box_files(synth, tmp_path, bbox):
    refs = pickle.loads(_paths(synth, "refcoco_refs").read_bytes())
    inst = json.loads(_paths(synth, "refcoco_instances").read_text())
    first = next(r for r in refs if r["split"] == "val")
    for ann in inst["annotations"]:
        if ann["id"] == first["ann_id"]:
            ann["bbox"] = bbox
    p = tmp_path / "instances.json"
    p.write_text(json.dumps(inst))  # NaN is written as the JSON extension NaN, which Python reads back
    return first, p


@pytest.mark.parametrize("bbox, reason", [([10, 10, 0, 5], "zero area"), ([10, 10, 5, 0], "zero area"),
                                          ([float("nan"), 1, 2, 3], "not finite"), ([1, 2, None, 3], "not finite")])
def test_bad_referred_box_is_an_error_or_a_counted_skip(synth, tok, tmp_path, bbox, reason):
    store = open_feature_store(_paths(synth, "features"))
    refs = _paths(synth, "refcoco_refs")
    first, inst = _bad_box_files(synth, tmp_path, bbox)
    with pytest.raises(DataError, match=rf"instances\.json, item 'ann {first['ann_id']} \(ref {first['ref_id']}\)'.*{reason}"):
        RefCOCODataset(refs, inst, store, tok, "val")
    good = RefCOCODataset(refs, _paths(synth, "refcoco_instances"), store, tok, "val")
    with pytest.warns(UserWarning):
        skipped = RefCOCODataset(refs, inst, store, tok, "val", skip_bad=True)
    assert len(skipped) == len(good) - len(first["sentences"])
    assert skipped.policy.skipped == 1


def test_controlled_configs_follow_volta_and_options_are_checked(synth):
    from pathlib import Path
    from types import SimpleNamespace

    from switchbert.train.config import ConfigError, load_config
    from switchbert.train.distributed import init_distributed
    from switchbert.train.tasks import RefExpTask

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "refexp").glob("*.yaml")):
        d = load_config(path).data
        assert (d.refexp_target, d.refexp_iou, d.refexp_loss, d.refexp_add_gt_box) == ("iou", "volta", "volta", False), path
    root, m = synth
    base = [f"data.root={root}", f"data.features={m['features']}", f"data.refcoco_refs={m['refcoco_refs']}",
            f"data.refcoco_instances={m['refcoco_instances']}"]
    synth_yaml = str(Path(__file__).resolve().parents[1] / "configs" / "synth" / "refexp.yaml")
    model = SimpleNamespace(region_feat_dim=FEAT, name="test")
    for bad, match in (("data.refexp_target=iou0.5", "refexp_target must be one of"),
                       ("data.refexp_loss=sum", "refexp_loss must be one of"),
                       ("data.refexp_add_gt_box=true", "needs data.refcoco_gt_features")):
        with pytest.raises(ConfigError, match=match):
            RefExpTask(load_config(synth_yaml, [*base, bad]), model, init_distributed("cpu"))
    task = RefExpTask(load_config(synth_yaml, [*base, "data.refexp_add_gt_box=true",
                                               f"data.refcoco_gt_features={m['features']}"]), model, init_distributed("cpu"))
    assert task.dataset("train").gt_store is not None and task.dataset("val").gt_store is None
