"""Hardened data input (issue 13): pickles that would run code, bad feature records, truncated stores."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

from switchbert.data.errors import DataError
from switchbert.data.features import (RegionRecord, _close_lmdb_env, open_feature_store, read_regions,
                                      write_store)
from switchbert.data.refcoco import load_refs
from switchbert.data.safe_pickle import UnsafePickleError, safe_loads, torch_load_weights

SRC = str(Path(__file__).resolve().parents[1] / "src")


class _System:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def _records(n=4, feat_dim=8, num_classes=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        xy = rng.uniform(0, 50, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (k, 2))], 1).astype(np.float32)
        probs = rng.dirichlet(np.ones(num_classes), k).astype(np.float32) if num_classes else None
        out.append(RegionRecord(str(10 + i), rng.random((k, feat_dim), dtype=np.float32), boxes, 100.0, 100.0, probs))
    return out


def _put(path: Path, key: bytes, value: bytes) -> None:
    _close_lmdb_env(path)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()


# ------------------------------------------------------------------------------ restricted unpickler
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_loads_admits_what_volta_records_hold(protocol):
    item = {"image_id": b"7", "image_h": 480, "image_w": 640.0, "num_boxes": np.int64(2),
            "boxes": np.arange(8, dtype=np.float64).reshape(2, 4), "features": np.ones((2, 3), np.float32),
            "cls_prob": np.full((2, 4), 0.25, np.float16), "scale": np.float32(1.5), "t": (1, "a", None),
            "flags": np.array([True, False]), "objects": np.array(["x", 1], dtype=object), "s": {1, 2}}
    got = safe_loads(pickle.dumps(item, protocol=protocol))
    assert got.keys() == item.keys()
    for key, value in item.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype
            np.testing.assert_array_equal(got[key], value)
        else:
            assert got[key] == value and type(got[key]) is type(value)


def test_safe_loads_reads_numpy1_module_names():
    # numpy 1.x writes numpy.core.multiarray._reconstruct; numpy 2.x writes numpy._core.multiarray.
    blob = pickle.dumps(np.arange(6, dtype=np.int32).reshape(2, 3), protocol=2)
    for old, new in ((b"numpy._core.multiarray", b"numpy.core.multiarray"),):
        if old in blob:
            blob = blob.replace(old, new)
    assert b"numpy.core.multiarray" in blob
    np.testing.assert_array_equal(safe_loads(blob), np.arange(6, dtype=np.int32).reshape(2, 3))


@pytest.mark.parametrize("payload", [_System, _Eval])
def test_safe_loads_refuses_code_and_names_file_and_record(tmp_path, payload):
    marker = tmp_path / "pwned"
    blob = pickle.dumps({"features": payload(marker)})
    with pytest.raises(UnsafePickleError, match=r"f\.lmdb, item '12': refused to unpickle.*(system|eval)"):
        safe_loads(blob, "f.lmdb", "12")
    assert not marker.exists()
    pickle.loads(blob)  # the same bytes do run code under plain pickle: the test can fail
    assert marker.exists()


def test_volta_store_refuses_crafted_keys_and_records(tmp_path):
    marker = tmp_path / "pwned"
    write_store(tmp_path / "v", _records(), "volta")
    _put(tmp_path / "v", b"11", pickle.dumps({"image_h": 1, "features": _System(marker)}))
    store = open_feature_store(tmp_path / "v")
    store.get("10")
    with pytest.raises(UnsafePickleError, match=r"v, item '11': refused to unpickle.*system"):
        store.get("11")
    store.close()
    _put(tmp_path / "v", b"keys", pickle.dumps([b"10", _System(marker)]))
    with pytest.raises(UnsafePickleError, match=r"item 'keys': refused"):
        open_feature_store(tmp_path / "v")
    assert not marker.exists()


def test_refcoco_refs_refuses_crafted_pickle(tmp_path):
    marker = tmp_path / "pwned"
    good = [{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "train", "sentences": [{"sent": "a", "sent_id": 4}]}]
    (tmp_path / "ok.p").write_bytes(pickle.dumps(good, protocol=2))
    assert load_refs(tmp_path / "ok.p") == good
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(good + [_System(marker)], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: refused to unpickle"):
        load_refs(tmp_path / "refs(unc).p")
    assert not marker.exists()
    with pytest.raises(DataError, match="is a directory"):
        load_refs(tmp_path)


def test_torch_weights_refusal_is_one_line(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": _System(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafePickleError) as info:
        torch_load_weights(tmp_path / "evil.pt")
    msg = str(info.value)
    assert "\n" not in msg and "evil.pt" in msg and "system" in msg and "weights_only=False" not in msg
    assert not marker.exists()
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(torch_load_weights(tmp_path / "ok.pt")["w"], torch.ones(2))


def test_cli_prints_refusal_as_one_line(tmp_path):
    marker = tmp_path / "pwned"
    write_store(tmp_path / "v", _records(), "volta")
    _put(tmp_path / "v", b"10", pickle.dumps({"features": _System(marker)}))
    r = subprocess.run([sys.executable, "-m", "switchbert.cli", "features", "inspect", str(tmp_path / "v")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "item '10': refused to unpickle" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


# ------------------------------------------------------------------------------------ feature records
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


def test_import_checkpoint_refuses_crafted_file_in_one_line(tmp_path, capsys):
    from switchbert.cli import main

    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": _System(marker)}, tmp_path / "evil.bin")
    assert main(["import-checkpoint", str(tmp_path / "evil.bin"), str(tmp_path / "out"), "--from", "volta",
                 "--preset", "uniter-tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evil.bin" in err and "refused to load" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


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


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` in a protocol-2 pickle (SHORT_BINSTRING / BINSTRING)."""
    return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + len(b).to_bytes(4, "little")) + b


def _py2_array(a: np.ndarray) -> bytes:
    """A numpy array as Python 2 + numpy 1 pickled it: numpy.core names, its bytes as a py2 str."""
    a = np.ascontiguousarray(a)
    shape = b"(" + b"".join(b"K" + bytes([d]) for d in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(a.dtype.str[1:].encode()) + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"<")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R(K\x01"
            + shape + dtype + b"\x89" + _py2_str(a.tobytes()) + b"tb")


def test_python2_volta_record_with_numpy1_names(tmp_path):
    feats = np.array([[0.5, 233.0]], np.float32)  # float bytes that are not ASCII
    boxes = np.array([[1, 2, 30, 40]], np.float32)
    entries = [(b"image_h", b"K\x64"), (b"image_w", b"K\x64"), (b"num_boxes", b"K\x01"),
               (b"features", _py2_array(feats)), (b"boxes", _py2_array(boxes))]
    blob = b"\x80\x02}(" + b"".join(_py2_str(k) + v for k, v in entries) + b"u."
    with pytest.raises(DataError, match="corrupt record: cannot unpickle"):
        safe_loads(blob, "x", "1")  # ASCII, as pickle.loads defaults: the array bytes do not decode
    write_store(tmp_path / "v", _records(n=1), "volta")
    _put(tmp_path / "v", b"10", blob)
    rec = open_feature_store(tmp_path / "v").get("10")
    np.testing.assert_array_equal(rec.features, feats)
    np.testing.assert_array_equal(rec.boxes_px, boxes)


@pytest.mark.parametrize("fmt", ["volta", "volta-b64", "fast"])
def test_zero_region_record_without_cls_prob_is_fine(tmp_path, fmt):
    def empty(r):
        r.features, r.boxes_px, r.cls_prob = np.zeros((0, 8), np.float32), np.zeros((0, 4), np.float32), None

    rec = _store_with(tmp_path, fmt, empty).get("12")
    assert rec.num_regions == 0 and rec.cls_prob.shape == (0, 5)
