"""Feature stores: every format round-trips through the one reader; bad records name store and image."""

import base64
import pickle

import lmdb
import numpy as np
import pytest

from switchbert.data.errors import DataError
from switchbert.data.features import (FastStore, H5Store, RegionRecord, VoltaLMDBStore, convert_store, detect_format,
                                      inspect_store, open_feature_store, read_regions, write_store)


def _records(n=5, feat_dim=16, num_classes=7, seed=0, regions=(3, 40, 0, 12, 36)):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = regions[i % len(regions)]
        xy = rng.uniform(0, 300, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 100, (k, 2))], 1).astype(np.float32)
        probs = rng.dirichlet(np.ones(num_classes), k).astype(np.float32) if num_classes else None
        out.append(RegionRecord(f"{1000 + i}", rng.uniform(0, 4, (k, feat_dim)).astype(np.float32), boxes,
                                640.0, 480.0, probs))
    return out


@pytest.mark.parametrize("fmt", ["fast", "volta", "volta-b64", "h5"])
def test_round_trip_every_format(tmp_path, fmt):
    recs = _records()
    path = tmp_path / ("s.h5" if fmt == "h5" else "s.lmdb")
    assert write_store(path, recs, fmt) == len(recs)
    store = open_feature_store(path)
    assert store.format == fmt
    assert len(store) == 5 and store.ids() == [r.image_id for r in recs]
    assert "1002" in store and 1002 in store and "999" not in store
    assert store.feat_dim == 16 and store.num_classes == 7
    tol = 2e-3 if fmt == "fast" else 0  # fast keeps float16 features
    for r in recs:
        got = store.get(r.image_id)
        assert got.features.dtype == np.float32 and got.features.shape == r.features.shape
        np.testing.assert_allclose(got.features, r.features, rtol=tol, atol=tol)
        np.testing.assert_array_equal(got.boxes_px, r.boxes_px)
        np.testing.assert_allclose(got.cls_prob, r.cls_prob, atol=1e-3 if fmt == "fast" else 0)
        assert (got.image_w, got.image_h) == (640.0, 480.0)


def test_store_without_class_distribution(tmp_path):
    write_store(tmp_path / "s", _records(num_classes=0), "fast")
    store = open_feature_store(tmp_path / "s")
    assert store.num_classes is None and store.get("1000").cls_prob is None


def test_vilbert_base64_with_float64_boxes_and_img_keys(tmp_path):
    # The ViLBERT multi-task writer: base64 strings, img_h/img_w names, float64 boxes, bytes keys.
    feats = np.arange(2 * 8, dtype=np.float32).reshape(2, 8)
    boxes = np.array([[0, 0, 10, 20], [5, 5, 50, 40]], dtype=np.float64)
    env = lmdb.open(str(tmp_path / "v"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"keys", pickle.dumps([b"42"]))
        txn.put(b"42", pickle.dumps({"image_id": 42, "img_h": 100, "img_w": 200, "num_boxes": 2,
                                     "boxes": base64.b64encode(boxes.tobytes()),
                                     "features": base64.b64encode(feats.tobytes()).decode()}))
    env.close()
    store = open_feature_store(tmp_path / "v")
    assert isinstance(store, VoltaLMDBStore) and store.format == "volta-b64"
    r = store.get(42)
    np.testing.assert_array_equal(r.features, feats)
    np.testing.assert_array_equal(r.boxes_px, boxes.astype(np.float32))
    assert (r.image_w, r.image_h) == (200, 100)


def test_region_processing_caps_and_normalises(tmp_path):
    write_store(tmp_path / "s", _records(), "fast")
    store = open_feature_store(tmp_path / "s")
    reg = read_regions(store, "1001")  # 40 stored regions
    assert reg.num_regions == 36 and reg.boxes.shape == (36, 5) and reg.boxes_px.shape == (36, 4)
    assert reg.cls_prob.shape == (36, 7)
    rec = store.get("1001")
    np.testing.assert_allclose(reg.boxes[:, 0], np.clip(rec.boxes_px[:36, 0] / 640, 0, 1), rtol=1e-6)
    assert read_regions(store, "1002").num_regions == 0
    with pytest.raises(DataError, match=r"s.*'1002'.*zero regions"):
        read_regions(store, "1002", require_regions=True)


def test_missing_image_names_store_and_id(tmp_path):
    write_store(tmp_path / "s", _records(), "volta")
    with pytest.raises(DataError) as exc:
        open_feature_store(tmp_path / "s").get("31337")
    assert str(tmp_path / "s") in str(exc.value) and "31337" in str(exc.value) and "missing image id" in str(exc.value)


def _overwrite(path, key, value):
    from switchbert.data.features import _close_lmdb_env

    _close_lmdb_env(path)  # one environment per path and process
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


def test_corrupt_records(tmp_path):
    write_store(tmp_path / "v", _records(), "volta")
    _overwrite(tmp_path / "v", b"1003", b"not a pickle")
    with pytest.raises(DataError, match=r"'1003'.*corrupt record"):
        open_feature_store(tmp_path / "v").get("1003")

    write_store(tmp_path / "f", _records(), "fast")
    store = FastStore(tmp_path / "f")
    blob = store._raw(b"1003")
    store.close()
    _overwrite(tmp_path / "f", b"1003", blob[:-10])  # truncated
    with pytest.raises(DataError, match=r"'1003'.*corrupt record.*bytes"):
        open_feature_store(tmp_path / "f").get("1003")

    recs = _records()
    recs[4].features[0, 0] = np.nan
    write_store(tmp_path / "n", recs, "volta")
    with pytest.raises(DataError, match=r"'1004'.*NaN"):
        open_feature_store(tmp_path / "n").get("1004")


def test_wrong_dimensions(tmp_path):
    recs = _records()
    recs[3] = RegionRecord("1003", np.zeros((4, 12), np.float32), np.zeros((4, 4), np.float32), 10, 10, None)
    write_store(tmp_path / "h.h5", recs, "h5")
    store = H5Store(tmp_path / "h.h5")
    with pytest.raises(DataError, match=r"h\.h5, item '1003': wrong dimensions: feature size 12, the store's is 16"):
        store.get("1003")
    recs[3] = RegionRecord("1003", np.zeros((4, 16), np.float32), np.zeros((3, 4), np.float32), 10, 10, None)
    write_store(tmp_path / "v", recs, "volta")
    with pytest.raises(DataError, match=r"'1003'.*wrong dimensions"):
        open_feature_store(tmp_path / "v").get("1003")


def test_convert_skip_bad_counts_and_inspect(tmp_path):
    write_store(tmp_path / "v", _records(), "volta-b64")
    _overwrite(tmp_path / "v", b"1001", b"garbage")
    with pytest.raises(DataError, match="1001"):
        convert_store(tmp_path / "v", tmp_path / "out1")
    with pytest.warns(UserWarning, match="skipped bad item"):
        n, policy = convert_store(tmp_path / "v", tmp_path / "out2", "fast", skip_bad=True)
    assert n == 4 and policy.skipped == 1
    assert detect_format(tmp_path / "out2") == "fast"
    assert "1001" not in open_feature_store(tmp_path / "out2")
    info = inspect_store(tmp_path / "out2")
    assert info["count"] == 4 and info["feat_dim"] == 16 and info["num_classes"] == 7
    assert info["regions"]["max"] == 36 and info["regions"]["min"] == 0 and info["regions"]["images_with_zero"] == 1


def test_unknown_store(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="not an HDF5"):
        open_feature_store(tmp_path / "x.txt")
    with pytest.raises(DataError, match="not found"):
        open_feature_store(tmp_path / "nope")


def test_store_survives_pickling(tmp_path):
    write_store(tmp_path / "s", _records(), "fast")
    store = open_feature_store(tmp_path / "s")
    store.get("1000")
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get("1000").features, store.get("1000").features)
