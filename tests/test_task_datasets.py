"""Each task builds the datasets of its splits (``Task.dataset``), without a model: training,
evaluation, route analysis and the demo read the same samples from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Subset

from switchbert.data import (AnswerVocab, CaptionPairsDataset, RefCOCODataset, RetrievalEvalDataset, VQADataset,
                             load_tokenizer, open_feature_store)
from switchbert.data.vqa import load_questions
from switchbert.train.config import load_config
from switchbert.train.tasks import build_task, task_class
from switchbert.train.tasks.manifest import (MissingManifestKey, collate_of, manifest_config, manifest_task,
                                             task_batches)
from tests.test_train_support import make_synth, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def _task(synth: Path, task: str, *overrides: str):
    out = synth.parent / "runs" / task  # retrieval caches its hard negatives in the run
    return build_task(load_config(synth_config(task), [f"data.root={synth}", f"output_dir={out}",
                                                       "model.init_from=null", *overrides]))


def _same_samples(a, b, indices) -> None:
    """The collated batches of ``a`` and ``b`` at ``indices`` hold the same text and regions."""
    for i in indices:
        (x, _), (y, _) = collate_of(a)([a[i]]), collate_of(b)([b[i]])
        assert torch.equal(x.text_ids, y.text_ids) and torch.equal(x.region_feats, y.region_feats)


def test_datasets_need_no_model_and_follow_the_config(synth):
    d = _task(synth, "vqa").config.data
    store, tok = open_feature_store(d.path("features")), load_tokenizer()

    pre = _task(synth, "pretrain")
    direct = CaptionPairsDataset(d.path("features").parent / pre.config.data.cc_valid, store, tok, 38, 36, seed=0)
    ours = pre.dataset("val")
    assert len(ours) == len(direct) and ours.max_text_len == pre.config.data.max_text_len
    assert len(pre.dataset("train")) == len(pre.train_dataset())

    vqa = _task(synth, "vqa")
    val = vqa.dataset("val")
    direct = VQADataset(d.path("vqa_val_questions"), d.path("vqa_val_annotations"), store, tok, vqa.vocab, 23)
    assert [it[0] for it in val.items] == [it[0] for it in direct.items]
    _same_samples(val, direct, [0, len(direct) - 1])
    assert [it[0] for it in vqa.dataset("train").items] == [it[0] for it in vqa.train_dataset().items]
    short = _task(synth, "vqa", "data.max_text_len=8").dataset("val")
    assert short.max_text_len == 8  # the config's text length, not a table's

    ret = _task(synth, "retrieval")
    test = ret.dataset("test")
    direct = RetrievalEvalDataset(d.path("features").parent / ret.config.data.flickr_test, store, tok, 30)
    assert test.image_ids == direct.image_ids and test.num_captions == direct.num_captions
    _same_samples(test, direct, [0, len(direct) - 1])
    assert [im.image_id for im in ret.dataset("train").images] == [im.image_id for im in ret.train_dataset().images]

    ref = _task(synth, "refexp")
    for split in ("val", "testA", "testB"):
        r = ref.config.data
        direct = RefCOCODataset(r.path("refcoco_refs"), r.path("refcoco_instances"), store, tok, split, 20)
        assert [it[:3] for it in ref.dataset(split).items] == [it[:3] for it in direct.items]
        _same_samples(ref.dataset(split), direct, [0, len(direct) - 1])
    assert [it[:3] for it in ref.dataset("train").items] == [it[:3] for it in ref.train_dataset().items]


def _old_route_dataset(data: Path, manifest: dict, task: str, split: str):
    """What ``switchbert routes`` read before the tasks built it (the old analysis/cli.py task_dataset)."""
    store, tok = open_feature_store(data / manifest["features"]), load_tokenizer()
    if task == "vqa":
        return VQADataset(data / manifest[f"vqa_{split}_questions"], None, store, tok, AnswerVocab([]), max_text_len=23)
    if task == "retrieval":
        ds = RetrievalEvalDataset(data / manifest[f"flickr_{split}"], store, tok, max_text_len=30)
        order = np.argsort(ds.caption_image, kind="stable")
        return Subset(ds, [int(ds.caption_image[c]) * ds.num_captions + int(c) for c in order])
    splits = ("testA", "testB") if split == "test" else (split,)
    parts = [RefCOCODataset(data / manifest["refcoco_refs"], data / manifest["refcoco_instances"], store, tok, s,
                            max_text_len=20) for s in splits]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


@pytest.mark.parametrize("task,split", [("vqa", "val"), ("vqa", "train"), ("retrieval", "val"), ("retrieval", "test"),
                                        ("refexp", "val"), ("refexp", "test")])
def test_route_analysis_reads_what_it_read_before(synth, task, split):
    manifest = json.loads((synth / "manifest.json").read_text())
    t = manifest_task(synth, task, split)
    assert t.config.data.max_text_len == task_class(task).text_len
    new, old = t.analysis_dataset(t.analysis_split(split)), _old_route_dataset(synth, manifest, task, split)
    assert len(new) == len(old)
    _same_samples(new, old, [0, len(old) // 2, len(old) - 1])


def test_route_analysis_under_trainval_reads_minival(synth):
    sets = ["data.vqa_protocol=trainval", "data.vqa_minival_size=3"]
    t = manifest_task(synth, "vqa", "val", sets)
    assert t.analysis_split("val") == "minival"
    ids = sorted(q["question_id"] for q in load_questions(t.config.data.path("vqa_val_questions")))
    assert {it[0] for it in t.analysis_dataset("minival").items} == set(ids[-3:])
    _, n = task_batches(synth, "vqa", "val", batch_size=2, overrides=sets)
    assert n == 3
    _, n = task_batches(synth, "vqa", "val", batch_size=2)
    assert n == len(ids)  # the train protocol reads the whole val split


def test_a_manifest_without_a_splits_file_names_the_key(synth, tmp_path):
    manifest = json.loads((synth / "manifest.json").read_text())
    keep = {k: str(synth / v) for k, v in manifest.items() if k == "features" or k.startswith("vqa_")}
    (tmp_path / "manifest.json").write_text(json.dumps(keep))
    with pytest.raises(MissingManifestKey, match="has no 'vqa_test_questions'"):
        manifest_task(tmp_path, "vqa", "test")
    with pytest.raises(MissingManifestKey, match="has no 'refcoco_refs'"):
        manifest_task(tmp_path, "refexp", "val")
    config = manifest_config(tmp_path, "vqa")
    assert config.data.vqa_val_questions == keep["vqa_val_questions"] and config.data.flickr_val is None
