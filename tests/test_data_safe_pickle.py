"""The restricted unpickler (data/safe_pickle.py): pickles that would run code are refused in one line
naming the file and the record, from feature stores, REFER pickles and torch checkpoints; what VOLTA
records hold (Python 2, numpy 1 names) still loads."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from switchbert.data.errors import DataError
from switchbert.data.features import open_feature_store, write_store
from switchbert.data.refcoco import load_refs
from switchbert.data.safe_pickle import UnsafePickleError, safe_loads, torch_load_weights
from tests.test_data_support import SRC, _Eval, _put, _records, _System


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


def test_import_checkpoint_refuses_crafted_file_in_one_line(tmp_path, capsys):
    from switchbert.cli import main

    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": _System(marker)}, tmp_path / "evil.bin")
    assert main(["import-checkpoint", str(tmp_path / "evil.bin"), str(tmp_path / "out"), "--from", "volta",
                 "--preset", "uniter-tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "evil.bin" in err and "refused to load" in err, err
    assert not marker.exists() and not (tmp_path / "out").exists()


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
