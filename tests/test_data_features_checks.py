"""Feature stores refuse bad records and stores (data/features.py): class probabilities, boxes,
truncated or foreign LMDB, corrupt metadata, destinations of the wrong kind."""

import os
import subprocess
import sys

import lmdb
import numpy as np
import pytest

from switchbert.data.errors import DataError
from switchbert.data.features import RegionRecord, _close_lmdb_env, open_feature_store, read_regions, write_store
from tests.test_data_support import SRC, _put, _records


def _store_with(tmp_path, fmt, change):
    recs = _records()
    change(recs[2])
    path = tmp_path / ("s.h5" if fmt == "h5" else "s")
    write_store(path, recs, fmt)
    return open_feature_store(path)


@pytest.mark.parametrize("fmt", ["fast", "volta", "h5"])
def test_cls_prob_wrong_class_count_in_one_record(tmp_path, fmt):
    def change(r):
        r.cls_prob = np.full((3, 6), 1 / 6, np.float32)

    store = _store_with(tmp_path, fmt, change)
    store.get("10")
    with pytest.raises(DataError, match=r"item '12': wrong dimensions: cls_prob has 6 classes, the store's is 5"):
        store.get("12")


@pytest.mark.parametrize("fmt", ["fast", "volta"])
def test_cls_prob_missing_or_nan(tmp_path, fmt):
    def nan(r):
        r.cls_prob[1, 2] = np.nan

    with pytest.raises(DataError, match=r"item '12': corrupt record: cls_prob contains NaN"):
        _store_with(tmp_path / "a", fmt, nan).get("12")

    def none(r):
        r.cls_prob = None

    with pytest.raises(DataError, match=r"item '12': wrong dimensions: no cls_prob"):
        _store_with(tmp_path / "b", fmt, none).get("12")


@pytest.mark.parametrize("box, kind", [([10, 10, 10, 30], "zero-area"), ([30, 10, 20, 40], "inverted"),
                                       ([10, 10, 400, 40], "outside"), ([-50, 10, 20, 40], "outside")])
def test_bad_boxes_are_errors_not_clipped(tmp_path, box, kind):
    def change(r):
        r.boxes_px[1] = box

    store = _store_with(tmp_path, "volta", change)
    with pytest.raises(DataError, match=rf"item '12': bad box: region 1 .*{kind}"):
        read_regions(store, "12")
    # a box a pixel outside (detector rounding) is still accepted and clipped
    store.close()

    def slightly(r):
        r.boxes_px[1] = [-0.5, 0, 100.7, 99]

    regions = read_regions(_store_with(tmp_path / "ok", "volta", slightly), "12")
    assert regions.boxes[1, :4].min() >= 0 and regions.boxes[1, :4].max() <= 1


@pytest.mark.parametrize("fmt", ["volta", "h5"])
def test_transposed_boxes_are_an_error(tmp_path, fmt):
    def change(r):
        r.boxes_px = np.ascontiguousarray(r.boxes_px.T)  # (4, 3)

    store = _store_with(tmp_path, fmt, change)
    with pytest.raises(DataError, match=r"item '12': wrong dimensions: boxes have shape \(4, 3\).*transposed"):
        store.get("12")


def test_truncated_lmdb_is_an_error_not_sigbus(tmp_path):
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([[1, 2, 30, 40]], np.float32), (36, 1))
    recs = [RegionRecord(str(i), rng.random((36, 256), dtype=np.float32), boxes, 100, 100, None) for i in range(120)]
    write_store(tmp_path / "s", recs, "volta")
    size = os.path.getsize(tmp_path / "s" / "data.mdb")
    os.truncate(tmp_path / "s" / "data.mdb", size // 2)
    # In a subprocess: on the old code this dies of SIGBUS (return code -7), which would kill pytest.
    r = subprocess.run([sys.executable, "-m", "switchbert.cli", "features", "inspect", str(tmp_path / "s")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "truncated LMDB store: data.mdb is" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_empty_or_foreign_lmdb_and_corrupt_fast_metadata(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "data.mdb").write_bytes(b"")
    with pytest.raises(DataError, match=r"e: truncated LMDB store: data.mdb is empty"):
        open_feature_store(tmp_path / "e")
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "data.mdb").write_bytes(b"\x01" * 100)
    with pytest.raises(DataError, match=r"g: not a readable LMDB store"):
        open_feature_store(tmp_path / "g")
    write_store(tmp_path / "f", _records(), "fast")
    _put(tmp_path / "f", b"__switchbert_meta__", b"{not json")
    with pytest.raises(DataError, match=r"f, item '__switchbert_meta__': corrupt record: metadata is not JSON"):
        open_feature_store(tmp_path / "f")


def test_store_destinations_of_the_wrong_kind(tmp_path, capsys):
    from switchbert.data.features import convert_store

    write_store(tmp_path / "v", _records(), "volta")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="dir: is a directory; the h5 format writes one file"):
        convert_store(tmp_path / "v", tmp_path / "dir", "h5")
    with pytest.raises(DataError, match="file: exists and is not a directory"):
        convert_store(tmp_path / "v", tmp_path / "file", "fast")
    with pytest.raises(DataError, match="is the source store"):
        convert_store(tmp_path / "v", tmp_path / "v", "fast")
    # writing over an old store replaces it: no record of the old one survives
    write_store(tmp_path / "out", _records(n=4), "volta")
    write_store(tmp_path / "out", _records(n=2), "volta")
    _close_lmdb_env(tmp_path / "out")
    env = lmdb.open(str(tmp_path / "out"), readonly=True, lock=False)
    with env.begin() as txn:
        assert sorted(k for k, _ in txn.cursor()) == [b"10", b"11", b"keys"]
    env.close()
    from switchbert.cli import main

    assert main(["synth", str(tmp_path / "file"), "--images", "20"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["volta", "volta-b64", "fast"])
def test_zero_region_record_without_cls_prob_is_fine(tmp_path, fmt):
    def empty(r):
        r.features, r.boxes_px, r.cls_prob = np.zeros((0, 8), np.float32), np.zeros((0, 4), np.float32), None

    rec = _store_with(tmp_path, fmt, empty).get("12")
    assert rec.num_regions == 0 and rec.cls_prob.shape == (0, 5)
