"""The extractor's torch-op building blocks against hand-computed cases: RoIPool, NMS, anchors, boxes."""

import math

import pytest
import torch

from switchbert.data.extract.anchors import cell_anchors, clip_boxes, decode_boxes, grid_anchors, nonempty
from switchbert.data.extract.backbone import FrozenBatchNorm2d, Stem
from switchbert.data.extract.nms import batched_nms, box_iou, nms
from switchbert.data.extract.roi import roi_pool


def _grid():
    return torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)  # value = 4 * row + col


def test_roi_pool_hand_computed_bins():
    # box 0..24 px at 1/8: cells 0..3 (4 cells) into 2x2 bins of 2x2 cells -> the max of each block
    out = roi_pool(_grid(), torch.tensor([[0, 0.0, 0.0, 24.0, 24.0]]), 2, 1 / 8)
    assert out[0, 0].tolist() == [[5, 7], [13, 15]]
    # x1 = 4 px = 0.5 cell rounds half away from zero to 1 (torch.round would give 0); cells 1..3 (3)
    # into 2 bins of 1.5: [floor(0), ceil(1.5)) = [1, 3) and [floor(1.5), ceil(3)) = [2, 4)
    out = roi_pool(_grid(), torch.tensor([[0, 4.0, 4.0, 24.0, 24.0]]), 2, 1 / 8)
    assert out[0, 0].tolist() == [[10, 11], [14, 15]]


def test_roi_pool_empty_bins_batch_index_and_shapes():
    feats = torch.stack([_grid()[0], -_grid()[0]])  # (2, 1, 4, 4)
    rois = torch.tensor([[0, 100.0, 100.0, 120.0, 120.0],  # outside the map: every bin empty -> 0
                         [1, 0.0, 0.0, 24.0, 24.0],        # second image: the max of -x is the smallest x
                         [0, 0.0, 0.0, 0.0, 0.0]])         # a point still covers one cell
    out = roi_pool(feats, rois, 2, 1 / 8)
    assert out.shape == (3, 1, 2, 2)
    assert out[0].abs().sum() == 0
    assert out[1, 0].tolist() == [[0, -2], [-8, -10]]
    assert out[2, 0].tolist() == [[0, 0], [0, 0]]
    assert roi_pool(feats, torch.zeros(0, 5), 2, 1 / 8).shape == (0, 1, 2, 2)


def test_roi_pool_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 9, 13, generator=g)
    xy = torch.rand(40, 2, generator=g) * torch.tensor([200.0, 140.0])
    rois = torch.cat([torch.randint(0, 2, (40, 1), generator=g).float(), xy,
                      xy + torch.rand(40, 2, generator=g) * 120], 1)
    out = roi_pool(feats, rois, 5, 1 / 16)

    def rnd(v):
        return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)

    for r in range(40):
        b, x1, y1, x2, y2 = rois[r].tolist()
        sx, sy, ex, ey = (rnd(v / 16) for v in (x1, y1, x2, y2))
        bw, bh = max(ex - sx + 1, 1) / 5, max(ey - sy + 1, 1) / 5
        for ph in range(5):
            for pw in range(5):
                h0 = min(max(math.floor(ph * bh) + sy, 0), 9)
                h1 = min(max(math.ceil((ph + 1) * bh) + sy, 0), 9)
                w0 = min(max(math.floor(pw * bw) + sx, 0), 13)
                w1 = min(max(math.ceil((pw + 1) * bw) + sx, 0), 13)
                want = (feats[int(b), :, h0:h1, w0:w1].amax(dim=(1, 2)) if h1 > h0 and w1 > w0
                        else torch.zeros(3))
                assert torch.equal(out[r, :, ph, pw], want), (r, ph, pw)


BOXES = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.1])


def test_nms_hand_computed():
    # IoU(A, B) = 81 / 119 = 0.68; A and D coincide (IoU 1); C overlaps nothing
    assert box_iou(BOXES[:1], BOXES[1:2]).item() == pytest.approx(81 / 119)
    assert nms(BOXES, SCORES, 0.5).tolist() == [0, 2]
    assert nms(BOXES, SCORES, 0.7).tolist() == [0, 1, 2]
    # Caffe's inclusive pixels: IoU(A, B) = 100 / 142 = 0.704 > 0.7
    assert nms(BOXES, SCORES, 0.7, plus_one=True).tolist() == [0, 2]
    assert nms(BOXES, SCORES, 0.7, max_keep=2).tolist() == [0, 1]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_batched_nms_keeps_other_classes():
    keep = batched_nms(BOXES, SCORES, torch.tensor([0, 1, 0, 0]), 0.5)
    assert sorted(keep.tolist()) == [0, 1, 2]  # B is another class; D is A's duplicate


def test_cell_and_grid_anchors():
    cells = cell_anchors((64.0, 128.0), (0.5, 1.0, 2.0))
    assert cells.shape == (6, 4)
    w = math.sqrt(64 ** 2 / 0.5)
    assert cells[0].tolist() == pytest.approx([-w / 2, -w * 0.5 / 2, w / 2, w * 0.5 / 2])
    assert cells[1].tolist() == pytest.approx([-32, -32, 32, 32])
    assert cells[4].tolist() == pytest.approx([-64, -64, 64, 64])  # size-major: 128 x ratio 1
    grid = grid_anchors(cells, 2, 3, 16)
    assert grid.shape == (2 * 3 * 6, 4)
    assert grid[6].tolist() == pytest.approx((cells[0] + torch.tensor([16.0, 0, 16, 0])).tolist())  # next column
    assert grid[18].tolist() == pytest.approx((cells[0] + torch.tensor([0.0, 16, 0, 16])).tolist())  # next row
    shifted = grid_anchors(cells, 2, 3, 16, offset=0.5)
    assert torch.allclose(shifted - grid, torch.full_like(grid, 8.0))


def test_decode_clip_nonempty():
    box = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    assert decode_boxes(torch.zeros(1, 4), box, (10, 10, 5, 5)).tolist() == [[0, 0, 10, 20]]
    moved = decode_boxes(torch.tensor([[10.0, 0, 5 * math.log(2), 0]]), box, (10, 10, 5, 5))
    assert moved[0].tolist() == pytest.approx([5.0, 0.0, 25.0, 20.0])  # centre +1 width, width x2
    two = decode_boxes(torch.zeros(1, 8), box, (1, 1, 1, 1))  # two classes: (1, 8)
    assert two.shape == (1, 8)
    caffe = decode_boxes(torch.zeros(1, 4), box, (1, 1, 1, 1), plus_one=True)
    assert caffe[0].tolist() == pytest.approx([0.0, 0.0, 11.0, 21.0])  # py-faster-rcnn's x2 = ctr + w / 2
    clipped = clip_boxes(torch.tensor([[-5.0, -1, 50, 50]]), 30, 40)
    assert clipped.tolist() == [[0, 0, 40, 30]]
    assert clip_boxes(torch.tensor([[-5.0, -1, 50, 50]]), 30, 40, plus_one=True).tolist() == [[0, 0, 39, 29]]
    assert nonempty(torch.tensor([[0.0, 0, 0, 5], [0, 0, 1, 1]])).tolist() == [False, True]
    assert nonempty(torch.tensor([[0.0, 0, 0, 5]]), plus_one=True).tolist() == [True]


def test_caffe_stem_pool_and_frozen_bn():
    stem = Stem(4, 1e-5)
    # 7x7/2 conv: 33 -> 17; Caffe pool (3/2, no pad, ceil): 17 -> 8; detectron2's floor pool would give 9
    assert stem(torch.zeros(1, 3, 33, 33)).shape[-2:] == (8, 8)
    bn = FrozenBatchNorm2d(3)
    for name, value in (("weight", 2.0), ("bias", 1.0), ("running_mean", 0.5), ("running_var", 4.0)):
        getattr(bn, name).fill_(value)
    ref = torch.nn.BatchNorm2d(3).eval()
    ref.load_state_dict({"weight": bn.weight, "bias": bn.bias, "running_mean": bn.running_mean,
                         "running_var": bn.running_var, "num_batches_tracked": torch.tensor(0)})
    x = torch.randn(2, 3, 5, 5)
    assert torch.allclose(bn(x), ref(x), atol=1e-6)
