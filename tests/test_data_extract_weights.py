"""Weight files in the three published key layouts: names, shapes, conversions and their errors."""

import pickle

import numpy as np
import pytest
import torch

from switchbert.data.extract import TINY_DETECTOR, BottomUpDetector, DetectorConfig, ExtractConfig
from switchbert.data.extract.keymaps import WeightsError, detect_layout, from_canonical
from switchbert.data.extract.preprocess import make_batch
from switchbert.data.extract.weights import load_detector, random_detector, sha256_file
from switchbert.data.safe_pickle import UnsafePickleError

RUN = ExtractConfig(min_size=64, max_size=96, min_boxes=3, max_boxes=6)


def write_layout(model, layout, path):
    """Writes ``model`` as the published files store it (test helper; the library never pickles)."""
    sd = from_canonical(model.state_dict(), layout, model.cfg)
    if layout == "py-bua":
        blob = {"model": {k: v.numpy() for k, v in sd.items()}, "__author__": "test"}
        path.write_bytes(pickle.dumps(blob, protocol=2))
    elif layout == "hf":
        torch.save(sd, path)
    else:
        torch.save({"model": sd, "iteration": 0}, path)
    return path


def _outputs(model):
    rs = np.random.RandomState(0)
    img = rs.randint(0, 255, (70, 90, 3), dtype=np.uint8)
    x, sizes, raws = make_batch([img], RUN)
    return model(x, sizes, raws, RUN)[0]


def test_full_size_keys_and_shapes():
    with torch.device("meta"):
        sd = BottomUpDetector(DetectorConfig()).state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["backbone.stem.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["backbone.stem.conv1.norm.running_var"] == (64,)
    assert shapes["backbone.res4.22.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["proposal_generator.rpn_head.conv.weight"] == (512, 1024, 3, 3)
    assert shapes["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
    assert shapes["proposal_generator.rpn_head.anchor_deltas.weight"] == (48, 512, 1, 1)
    assert shapes["roi_heads.res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert shapes["roi_heads.res5.2.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["roi_heads.box_predictor.cls_score.weight"] == (1601, 2048)
    assert shapes["roi_heads.box_predictor.bbox_pred.weight"] == (6400, 2048)
    assert shapes["roi_heads.box_predictor.cls_embedding.weight"] == (1601, 256)
    assert shapes["roi_heads.box_predictor.fc_attr.weight"] == (512, 2304)
    assert shapes["roi_heads.box_predictor.attr_score.weight"] == (401, 512)
    assert not any("cell_anchors" in k for k in sd)  # computed from the config, never loaded
    assert sum(1 for k in sd if k.startswith("backbone.res4.")) == 23 * 3 * 5 + 5  # 23 blocks + shortcut
    milvlg = from_canonical({k: torch.zeros(v.shape) for k, v in sd.items()
                             if k.startswith("roi_heads.box_predictor") or "objectness" in k}, "milvlg")
    assert tuple(milvlg["roi_heads.box_predictor.bbox_pred.weight"].shape) == (6404, 2048)
    assert tuple(milvlg["proposal_generator.rpn_head.objectness_logits.weight"].shape) == (24, 512, 1, 1)
    assert tuple(milvlg["roi_heads.box_predictor.attr_linear2.weight"].shape) == (401, 512)


@pytest.mark.parametrize("layout,name", [("py-bua", "faster_rcnn_from_caffe_attr.pkl"),
                                         ("hf", "pytorch_model.bin"), ("milvlg", "bua-caffe-frcn-r101-k36.pth")])
def test_each_layout_loads_to_the_same_detector(tmp_path, layout, name):
    model = random_detector(TINY_DETECTOR, seed=3)
    path = write_layout(model, layout, tmp_path / name)
    loaded, info = load_detector(path, TINY_DETECTOR)
    assert info.layout == layout and info.sha256 == sha256_file(path) and len(info.sha256) == 64
    want, got = _outputs(model), _outputs(loaded)
    assert 3 <= len(want.boxes) <= 6 and want.features.shape[1] == TINY_DETECTOR.feat_dim
    assert torch.allclose(got.features, want.features, atol=1e-5)
    assert torch.allclose(got.boxes, want.boxes, atol=1e-3)
    assert torch.allclose(got.cls_prob, want.cls_prob, atol=1e-5)
    assert torch.equal(got.attr_ids, want.attr_ids)


def test_milvlg_conversion_is_the_same_function():
    """Caffe's 2-way RPN softmax and background-first classes give what our layout computes."""
    model = random_detector(TINY_DETECTOR, seed=1)
    sd = from_canonical(model.state_dict(), "milvlg")
    w = sd["proposal_generator.rpn_head.objectness_logits.weight"][:, :, 0, 0]
    x = torch.randn(5, w.shape[1])
    two = (x @ w.T).view(5, 2, -1).softmax(1)[:, 1]  # MILVLG: view(N, 2, A), softmax, foreground
    ours = torch.sigmoid(x @ model.state_dict()["proposal_generator.rpn_head.objectness_logits.weight"][:, :, 0, 0].T)
    assert torch.allclose(two, ours, atol=1e-6)
    cls = sd["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls[0], model.state_dict()["roi_heads.box_predictor.cls_score.weight"][-1])  # bg first
    assert detect_layout(sd) == "milvlg"


def test_errors_name_missing_unexpected_and_misshaped_keys(tmp_path):
    sd = random_detector(TINY_DETECTOR).state_dict()
    sd.pop("roi_heads.box_predictor.cls_score.bias")
    sd["roi_heads.box_predictor.extra.weight"] = torch.zeros(2)
    sd["proposal_generator.rpn_head.conv.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        load_detector(tmp_path / "bad.pth", TINY_DETECTOR, layout="py-bua")
    msg = str(err.value)
    assert "bad.pth" in msg and "1 missing: roi_heads.box_predictor.cls_score.bias" in msg
    assert "1 unexpected: roi_heads.box_predictor.extra.weight" in msg
    assert "1 mis-shaped: proposal_generator.rpn_head.conv.weight: file (3, 3), detector (8, 64, 3, 3)" in msg
    with pytest.raises(WeightsError, match="does not fit"):  # the full-size detector refuses tiny weights
        load_detector(tmp_path / "bad.pth", DetectorConfig(blocks=(1, 1, 1, 1)), layout="py-bua")


def test_hf_anchors_checked_and_unsafe_pickles_refused(tmp_path):
    model = random_detector(TINY_DETECTOR)
    sd = from_canonical(model.state_dict(), "hf", TINY_DETECTOR)
    assert sd["proposal_generator.anchor_generator.cell_anchors.0"].shape == (12, 4)
    sd["proposal_generator.anchor_generator.cell_anchors.0"] = torch.zeros(12, 4)
    torch.save(sd, tmp_path / "hf.bin")
    with pytest.raises(WeightsError, match="anchors .* differ"):
        load_detector(tmp_path / "hf.bin", TINY_DETECTOR)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"model": {"x": Evil()}}))
    with pytest.raises(UnsafePickleError, match="builtins.print"):
        load_detector(tmp_path / "evil.pkl", TINY_DETECTOR)


def test_pickle_without_bn_statistics_gets_detectron2_defaults(tmp_path):
    model = random_detector(TINY_DETECTOR)
    sd = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith(("running_mean", "running_var"))}
    (tmp_path / "w.pkl").write_bytes(pickle.dumps({"model": sd}))
    loaded, info = load_detector(tmp_path / "w.pkl", TINY_DETECTOR)
    assert info.filled_bn_stats > 0
    norm = loaded.backbone.stem.conv1.norm
    assert norm.running_mean.abs().sum() == 0 and torch.all(norm.running_var == 1)
