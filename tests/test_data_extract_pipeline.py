"""A tiny random-weight detector end to end: the API on the bundled photo, the CLI in every weight
layout and store format, bad images, resume after kill -9, progress, and a pretraining batch."""

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from switchbert.commands.data import register
from switchbert.data.errors import DataError
from switchbert.data.extract import TINY_DETECTOR, ExtractConfig, RegionExtractor, extract_regions, random_detector
from switchbert.data.extract.settings import build_config
from switchbert.data.extract.pipeline import Progress, extract_folder, extraction_metadata, journal_path
from switchbert.data.extract.preprocess import BadImageError, resized_size
from switchbert.data.features import open_feature_store

from tests.test_data_extract_weights import write_layout

PHOTO = Path(__file__).parent / "fixtures" / "astronaut_crop.jpg"  # NASA photo via scikit-image: public domain
RUN = ExtractConfig(min_size=96, max_size=160, min_boxes=4, max_boxes=8)
TINY_SETS = ["--set", "min_size=96", "--set", "max_size=160", "--boxes", "4-8"]


def _main(argv):
    parser = argparse.ArgumentParser(prog="switchbert")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def model():
    return random_detector(TINY_DETECTOR, seed=5)


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "tiny.json"
    p.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in TINY_DETECTOR.__dict__.items()}))
    return p


def _folder(root: Path, n: int = 3) -> Path:
    d = root / "photos"
    (d / "sub").mkdir(parents=True)
    img = Image.open(PHOTO)
    for i in range(n):
        img.rotate(90 * i, expand=True).save(d / f"img_{i}.jpg")
    img.convert("L").save(d / "sub" / "grey.png")
    return d


def test_api_on_the_bundled_photo(model):
    (rec,) = extract_regions([PHOTO], model=model, config=RUN)
    assert rec.image_id == "astronaut_crop" and (rec.image_w, rec.image_h) == (160.0, 128.0)
    k = rec.num_regions
    assert 4 <= k <= 8 and rec.features.shape == (k, 128) and rec.boxes_px.shape == (k, 4)
    assert rec.cls_prob.shape == (k, TINY_DETECTOR.num_classes + 1)
    assert np.allclose(rec.cls_prob.sum(1), 1, atol=1e-5)
    b = rec.boxes_px
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0 and b[:, 2].max() <= 160
    # background first by default: the best non-background class is column object_id + 1
    assert np.allclose(rec.cls_prob[np.arange(k), rec.object_ids + 1], rec.object_conf, atol=1e-6)
    assert rec.attr_ids.shape == (k,) and (rec.attr_ids < TINY_DETECTOR.num_attributes).all()
    (last,) = extract_regions([PHOTO], model=model, config=ExtractConfig(**{**RUN.settings(), "cls_prob_background": "last"}))
    assert np.allclose(last.cls_prob[:, :-1], rec.cls_prob[:, 1:]) and np.allclose(last.cls_prob[:, -1], rec.cls_prob[:, 0])


def test_batched_equals_one_by_one(model):
    arr = np.asarray(Image.open(PHOTO).convert("RGB"))[:, :, ::-1].copy()
    other = np.ascontiguousarray(arr[:100, :90])  # another size: padding inside the batch
    ex = RegionExtractor(model=model, config=RUN)
    together = ex.extract([arr, other], batch_size=2)
    alone = ex.extract([arr]) + ex.extract([other])
    for a, b in zip(together, alone):
        assert a.num_regions == b.num_regions
        assert np.allclose(a.features, b.features, atol=1e-4) and np.allclose(a.boxes_px, b.boxes_px, atol=1e-3)


def test_regressed_boxes_and_per_class_nms_options(model):
    (prop,) = extract_regions([PHOTO], model=model, config=RUN)
    (reg,) = extract_regions([PHOTO], model=model, config=ExtractConfig(**{**RUN.settings(), "feature_boxes": "regressed"}))
    assert np.allclose(prop.boxes_px, reg.boxes_px) and not np.allclose(prop.features, reg.features)
    (pc,) = extract_regions([PHOTO], model=model, config=ExtractConfig(**{**RUN.settings(), "nms_mode": "per_class",
                                                                         "score_thresh": 0.05}))
    assert 1 <= pc.num_regions <= 8


def test_resize_rule_and_config_errors():
    assert resized_size(480, 640, ExtractConfig()) == (600, 800)
    assert resized_size(300, 1200, ExtractConfig()) == (250, 1000)  # the longer side caps at 1000
    assert build_config("10-100").min_boxes == 10 and build_config("10-100").max_boxes == 100
    assert build_config("36", "caffe").box_plus_one and build_config("36", "hf").channel_order == "rgb"
    assert build_config("36", sets=["nms_thresholds=0.5,0.6"]).nms_thresholds == (0.5, 0.6)
    for bad, match in ((("x",), "expected a count"), (("36", "py-bua", ["nope=1"]), "unknown setting"),
                       (("36", "py-bua", ["nms_mode=all"]), "nms_mode must be")):
        with pytest.raises(ValueError, match=match):
            build_config(*bad)


@pytest.mark.parametrize("layout,name,fmt", [("py-bua", "faster_rcnn_from_caffe_attr.pkl", "fast"),
                                             ("hf", "pytorch_model.bin", "volta"),
                                             ("milvlg", "bua-caffe-frcn-r101-k36.pth", "h5")])
def test_cli_every_layout_and_format(tmp_path, capsys, model, tiny_json, layout, name, fmt):
    photos = _folder(tmp_path)
    weights = write_layout(model, layout, tmp_path / name)
    out = tmp_path / ("store.h5" if fmt == "h5" else "store")
    argv = ["features", "extract", str(photos), "--weights", str(weights), "--out", str(out), "--format", fmt,
            "--detector-config", str(tiny_json), "--batch-size", "2", *TINY_SETS]
    assert _main(argv) == 0
    captured = capsys.readouterr()
    assert "wrote 4 images" in captured.out and "sha256" in captured.err and f"layout {layout}" in captured.err
    store = open_feature_store(out)
    assert store.format == fmt and sorted(store.ids()) == ["img_0", "img_1", "img_2", "sub__grey"]
    assert store.feat_dim == 128 and store.num_classes == TINY_DETECTOR.num_classes + 1
    direct = {r.image_id: r for r in extract_regions(sorted(photos.rglob("*.*")), model=model, config=RUN,
                                                     ids=["img_0", "img_1", "img_2", "sub__grey"])}
    tol = 2e-2 if fmt == "fast" else 1e-4  # fast stores features in float16
    for iid in store.ids():
        rec = store.get(iid)
        assert np.allclose(rec.features, direct[iid].features, atol=tol, rtol=1e-2)
        assert np.allclose(rec.boxes_px, direct[iid].boxes_px, atol=1e-3)
    meta = extraction_metadata(out)
    assert meta["weights"]["layout"] == layout and len(meta["weights"]["sha256"]) == 64
    assert meta["settings"]["min_boxes"] == 4 and meta["settings"]["nms_mode"] == "max_class"
    assert not journal_path(out).exists()
    assert _main(["features", "inspect", str(out)]) == 0


def _bad_images(d: Path) -> None:
    buf = io.BytesIO()
    Image.open(PHOTO).save(buf, "JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.open(PHOTO).convert("CMYK").save(d / "cmyk.jpg")
    Image.new("RGB", (1, 1)).save(d / "one_pixel.png")
    Image.new("RGB", (20000, 4)).save(d / "wide.png")
    (d / "notes.jpg").write_text("not an image at all")


def test_bad_images_are_counted_skips_or_clear_errors(tmp_path, capsys, model):
    photos = _folder(tmp_path, n=1)
    _bad_images(photos)
    ex = RegionExtractor(model=model, config=RUN)
    summary = extract_folder(photos, ex, tmp_path / "s", progress_interval=1e9)
    assert summary.written == 3  # img_0, grey, CMYK
    assert sum(summary.skipped.values()) == 4
    assert set(summary.skipped) == {"corrupt image", "too small", "too elongated", "not an image"}
    text = " ".join(summary.skipped_examples)
    assert "truncated.jpg" in text and "one_pixel.png" in text and "wide.png" in text and "notes.jpg" in text
    with pytest.raises(BadImageError, match=r"notes\.jpg.*not an image"):
        extract_folder(photos, ex, tmp_path / "strict", skip_bad=False)


def test_resume_skips_done_work_and_refuses_other_settings(tmp_path, model):
    photos = _folder(tmp_path, n=5)
    ex = RegionExtractor(model=model, config=RUN)
    first = extract_folder(photos, ex, tmp_path / "s", stop_after=2, progress_interval=1e9)
    assert first.computed == 2 and first.written == 0 and journal_path(tmp_path / "s").exists()
    other = RegionExtractor(model=model, config=ExtractConfig(**{**RUN.settings(), "max_boxes": 9}))
    with pytest.raises(DataError, match=r"another run \(settings.max_boxes: 8 -> 9"):
        extract_folder(photos, other, tmp_path / "s")
    second = extract_folder(photos, ex, tmp_path / "s", progress_interval=1e9)
    assert second.resumed == 2 and second.computed == 4 and second.written == 6


def test_progress_line_with_an_injected_clock():
    now = [0.0]
    out = io.StringIO()
    p = Progress(total=100, already=10, interval=5.0, clock=lambda: now[0], stream=out)
    now[0] = 10.0
    p.update(20, skipped=1)
    assert out.getvalue().strip() == "extract: 30/100 images (1 skipped), 2.00 images/s, 0m35s left"
    p.update(0, skipped=1, force=True)  # the final forced line is not a repeat
    assert out.getvalue().count("\n") == 1


def test_kill_9_leaves_no_torn_record_and_resume_recomputes_nothing(tmp_path, model, tiny_json):
    photos = _folder(tmp_path, n=40)
    weights = write_layout(model, "hf", tmp_path / "w.bin")
    out = tmp_path / "store"
    argv = [sys.executable, "-m", "switchbert", "features", "extract", str(photos), "--weights", str(weights),
            "--out", str(out), "--detector-config", str(tiny_json), *TINY_SETS]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = journal_path(out)
    import lmdb

    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.05)
        if (journal / "data.mdb").exists():
            e = lmdb.open(str(journal), readonly=True, lock=False)
            with e.begin() as txn:
                done = txn.stat()["entries"] - 1
            e.close()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done >= 3 and journal.exists() and not (out / "data.mdb").exists()
    ex = RegionExtractor(weights, detector=TINY_DETECTOR, config=build_config("4-8", sets=["min_size=96", "max_size=160"]))
    summary = extract_folder(photos, ex, out, progress_interval=1e9)
    assert summary.resumed >= 3 and summary.resumed + summary.computed == 41 and summary.written == 41
    clean = extract_folder(photos, ex, tmp_path / "clean", progress_interval=1e9)
    a, b = open_feature_store(out), open_feature_store(tmp_path / "clean")
    assert a.ids() == b.ids()
    for iid in a.ids():
        assert np.array_equal(a.get(iid).features, b.get(iid).features)


def test_a_pretraining_batch_reads_the_extracted_store(tmp_path, model):
    from switchbert.data import CaptionPairsDataset, load_tokenizer

    photos = _folder(tmp_path, n=3)
    ex = RegionExtractor(model=model, config=RUN)
    extract_folder(photos, ex, tmp_path / "s", progress_interval=1e9)
    caps = tmp_path / "caption_train.json"
    caps.write_text(json.dumps({"img_0": "an astronaut with a flag", "img_1": "a man in a suit",
                                "img_2": "a person smiling", "sub__grey": "a grey photo"}))
    store = open_feature_store(tmp_path / "s")
    ds = CaptionPairsDataset(caps, store, load_tokenizer(), max_text_len=12, seed=0)
    batch, labels = ds.collate([ds[i] for i in range(len(ds))])
    batch.validate(128)
    assert labels.mrc_targets.shape[-1] == TINY_DETECTOR.num_classes + 1


def test_pad_batch_is_an_option_that_changes_edge_features(model):
    arr = np.asarray(Image.open(PHOTO).convert("RGB"))[:, :, ::-1].copy()
    other = np.ascontiguousarray(arr[:100, :90])
    padded = RegionExtractor(model=model, config=ExtractConfig(**{**RUN.settings(), "pad_batch": True}))
    (alone,) = padded.extract([other])
    together = padded.extract([arr, other], batch_size=2)
    assert together[1].num_regions >= 4 and not np.allclose(together[1].features, alone.features, atol=1e-4)


def test_cli_errors_are_one_line(tmp_path, capsys, tiny_json):
    photos = _folder(tmp_path, n=1)
    base = ["features", "extract", str(photos), "--out", str(tmp_path / "s"), "--detector-config", str(tiny_json)]
    assert _main(base + ["--weights", str(tmp_path / "missing.pkl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing.pkl: weights file not found" in err and "\n" not in err
    assert _main(base + ["--weights", str(PHOTO), "--boxes", "0"]) == 2
    assert "--boxes '0'" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(model):
    (cpu,) = extract_regions([PHOTO], model=model, config=RUN)
    (gpu,) = extract_regions([PHOTO], model=random_detector(TINY_DETECTOR, seed=5), config=RUN, device="cuda")
    assert cpu.num_regions == gpu.num_regions
    assert np.allclose(cpu.features, gpu.features, atol=1e-3) and np.allclose(cpu.boxes_px, gpu.boxes_px, atol=1e-2)


def test_max_conf_selection_matches_a_naive_generate_tsv_loop(model):
    from switchbert.data.extract.nms import nms

    cfg = ExtractConfig(**{**RUN.settings(), "nms_mode": "max_conf", "nms_thresholds": (0.3,), "score_thresh": 0.2})
    arr = np.asarray(Image.open(PHOTO).convert("RGB"))[:, :, ::-1].copy()
    (rec,) = RegionExtractor(model=model, config=cfg).extract([arr])
    # the same selection written as generate_tsv.py does it, from the model's own proposals and scores
    from switchbert.data.extract.preprocess import make_batch

    x, sizes, raws = make_batch([arr], cfg)
    with torch.no_grad():
        feats = model.backbone(x)
        props = model.proposal_generator(feats, sizes, cfg)[0]
        logits = model.roi_heads.box_predictor(model.roi_heads.pooled_features(feats, [props]))[0]
    scores = logits.softmax(-1)[:, :-1]
    max_conf = np.zeros(len(props), np.float32)
    for c in range(scores.shape[1]):
        keep = nms(props, scores[:, c], 0.3).numpy()
        max_conf[keep] = np.maximum(max_conf[keep], scores[keep, c].numpy())
    want = np.flatnonzero(max_conf >= 0.2)
    if len(want) < 4 or len(want) > 8:
        want = np.argsort(-max_conf, kind="stable")[: 4 if len(want) < 4 else 8]
    scale = np.array([raws[0][1] / sizes[0][1], raws[0][0] / sizes[0][0]] * 2, np.float32)
    assert rec.num_regions == len(want)
    assert np.allclose(rec.boxes_px, props[want].numpy() * scale, atol=1e-3)


def test_a_vqa_finetuning_batch_reads_the_extracted_store(tmp_path, model):
    from switchbert.data import VQADataset, build_answer_vocab, load_tokenizer

    photos = tmp_path / "coco"
    photos.mkdir()
    for i in (1, 2):
        Image.open(PHOTO).rotate(90 * i, expand=True).save(photos / f"{i}.jpg")  # ids as COCO's integers
    extract_folder(photos, RegionExtractor(model=model, config=RUN), tmp_path / "s", progress_interval=1e9)
    qs = {"questions": [{"question_id": 10 + i, "image_id": i, "question": "what is in the photo?"} for i in (1, 2)]}
    anns = {"annotations": [{"question_id": 10 + i, "image_id": i, "multiple_choice_answer": "man",
                             "answers": [{"answer": "man", "answer_id": k + 1} for k in range(10)]} for i in (1, 2)]}
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(anns))
    vocab = build_answer_vocab([tmp_path / "a.json"])
    ds = VQADataset(tmp_path / "q.json", tmp_path / "a.json", open_feature_store(tmp_path / "s"), load_tokenizer(), vocab)
    batch, labels = ds.collate([ds[0], ds[1]])
    batch.validate(128)
    assert batch.region_mask.sum(1).min() >= 4
