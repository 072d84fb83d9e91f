"""Key maps from the published bottom-up-attention weight files to our detector's state dict.

Dimension legend: A anchors (12), M object classes (1600), Q attributes (400), F features (2048).

Our module names are py-bottom-up-attention's (detectron2's), so its layout maps by identity. The
three layouts users have:

``py-bua``  ``faster_rcnn_from_caffe[_attr].pkl`` (py-bottom-up-attention): a pickle of
            ``{"model": {name: numpy array}}``. Frozen batch norms may lack ``running_mean`` /
            ``running_var``; detectron2 then uses 0 and 1, and so do we.
``hf``      ``unc-nlp/frcnn-vg-finetuned``'s ``pytorch_model.bin`` (HF's LXMERT research example): the
            same names, plus ``num_batches_tracked`` of its ``nn.BatchNorm2d`` (dropped) and the anchor
            generator's ``cell_anchors.0`` (checked against ours, then dropped).
``milvlg``  ``bua-caffe-frcn-r101-k36.pth`` (MILVLG bottom-up-attention.pytorch, the Caffe model in
            detectron2 modules): Caffe's 2-way RPN softmax (2A channels, background first), background
            as class 0 with its own box deltas, box deltas for weights (1, 1, 1, 1), and attribute
            layers ``cls_embed``, ``attr_linear1``, ``attr_linear2`` with "no attribute" first. The map
            folds the softmax into one logit (``fg - bg``), moves background last, drops its deltas,
            scales the deltas by (10, 10, 5, 5) and renames the attribute layers: the same function.

Every layout goes through :func:`check_state_dict`, which names missing, unexpected and mis-shaped
keys in one error.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from switchbert.data.errors import DataError, PathLike
from switchbert.data.extract.config import DetectorConfig

LAYOUTS = ("py-bua", "hf", "milvlg")

_ANCHOR_KEY = "proposal_generator.anchor_generator.cell_anchors.0"
_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_PRED = "roi_heads.box_predictor."
_MILVLG_RENAMES = {"cls_embed.": "cls_embedding.", "attr_linear1.": "fc_attr.", "attr_linear2.": "attr_score."}


class WeightsError(DataError):
    """A weight file that does not fit the detector: names the file and every offending key."""

    def __reduce__(self):
        return (WeightsError, (self.path, self.item, self.reason))


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """'hf', 'milvlg' or 'py-bua' from tell-tale keys (num_batches_tracked, cls_embed)."""
    if any(k.endswith("num_batches_tracked") for k in state) or _ANCHOR_KEY in state:
        return "hf"
    if any(k.startswith(_PRED + "cls_embed.") or k.startswith(_PRED + "attr_linear") for k in state):
        return "milvlg"
    obj = state.get("proposal_generator.rpn_head.objectness_logits.weight")
    cls = state.get(_PRED + "cls_score.weight")
    box = state.get(_PRED + "bbox_pred.weight")
    if obj is not None and cls is not None and box is not None and box.shape[0] == 4 * cls.shape[0]:
        return "milvlg"  # background has its own deltas only in the Caffe model
    return "py-bua"


def _roll_background_last(t: torch.Tensor) -> torch.Tensor:
    """Rows [bg, c1..cM] -> [c1..cM, bg]."""
    return torch.cat([t[1:], t[:1]])


def _roll_background_first(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t[-1:], t[:-1]])


def to_canonical(state: Mapping[str, torch.Tensor], layout: str, cfg: DetectorConfig,
                 path: Optional[PathLike] = None) -> dict[str, torch.Tensor]:
    """Translates a weight file's tensors into our names and conventions (see the module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown weights layout {layout!r}; choose one of {LAYOUTS}")
    out = {k: v for k, v in state.items()}
    if layout == "hf":
        out = {k: v for k, v in out.items() if not k.endswith("num_batches_tracked")}
    anchors = out.pop(_ANCHOR_KEY, None)
    if anchors is not None:
        from switchbert.data.extract.anchors import cell_anchors

        ours = cell_anchors(cfg.anchor_sizes, cfg.anchor_ratios)
        if tuple(anchors.shape) != tuple(ours.shape) or not torch.allclose(anchors.float(), ours, atol=1e-3):
            raise WeightsError(path, _ANCHOR_KEY, f"the file's anchors {anchors.tolist()} differ from the "
                                                 f"detector's (sizes {cfg.anchor_sizes}, ratios {cfg.anchor_ratios})")
    if layout == "milvlg":
        out = _milvlg_to_canonical(out)
    return out


def _milvlg_to_canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for old, new in _MILVLG_RENAMES.items():
            if k.startswith(_PRED + old):
                k = _PRED + new + k[len(_PRED + old):]
        out[k] = v
    for suffix in ("weight", "bias"):
        key = f"proposal_generator.rpn_head.objectness_logits.{suffix}"
        if key in out and out[key].shape[0] % 2 == 0:
            v = out[key]
            a = v.shape[0] // 2
            out[key] = v[a:] - v[:a]  # softmax(bg, fg)[fg] == sigmoid(fg - bg)
        key = _PRED + f"cls_score.{suffix}"
        if key in out:
            out[key] = _roll_background_last(out[key])
        key = _PRED + f"bbox_pred.{suffix}"
        if key in out:
            v = out[key][4:]  # background's deltas are never used
            out[key] = v * _box_scale(v)
        key = _PRED + f"attr_score.{suffix}"
        if key in out:
            out[key] = _roll_background_last(out[key])
    key = _PRED + "cls_embedding.weight"
    if key in out:
        out[key] = _roll_background_last(out[key])
    return out


def _box_scale(v: torch.Tensor) -> torch.Tensor:
    """The box coder's weights, one per delta of a box-regression weight (rows) or bias: broadcasts to ``v``."""
    scale = torch.tensor(_BOX_WEIGHTS, dtype=v.dtype).repeat(v.shape[0] // 4)
    return scale.view(-1, 1) if v.dim() == 2 else scale


def from_canonical(state: Mapping[str, torch.Tensor], layout: str,
                   cfg: Optional[DetectorConfig] = None) -> dict[str, torch.Tensor]:
    """Our state dict written in ``layout``'s names and conventions (tests and comparisons use it).

    ``hf`` also gets the anchor generator's ``cell_anchors.0`` when ``cfg`` is given, as HF's file has.
    """
    out = {k: v.clone() for k, v in state.items()}
    if layout == "hf":
        for k in [k for k in out if k.endswith("norm.running_var")]:
            out[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
        if cfg is not None:
            from switchbert.data.extract.anchors import cell_anchors

            out[_ANCHOR_KEY] = cell_anchors(cfg.anchor_sizes, cfg.anchor_ratios)
    elif layout == "milvlg":
        for suffix in ("weight", "bias"):
            key = f"proposal_generator.rpn_head.objectness_logits.{suffix}"
            v = out[key]
            out[key] = torch.cat([torch.zeros_like(v), v])  # bg logit 0, fg logit = ours
            key = _PRED + f"cls_score.{suffix}"
            out[key] = _roll_background_first(out[key])
            key = _PRED + f"bbox_pred.{suffix}"
            v = out[key]
            v = v / _box_scale(v)
            out[key] = torch.cat([torch.zeros_like(v[:4]), v])
            key = _PRED + f"attr_score.{suffix}"
            if key in out:
                out[key] = _roll_background_first(out[key])
        key = _PRED + "cls_embedding.weight"
        if key in out:
            out[key] = _roll_background_first(out[key])
        for new, old in ((n, o) for o, n in _MILVLG_RENAMES.items()):
            for k in [k for k in out if k.startswith(_PRED + new)]:
                out[_PRED + old + k[len(_PRED + new):]] = out.pop(k)
    elif layout != "py-bua":
        raise ValueError(f"unknown weights layout {layout!r}; choose one of {LAYOUTS}")
    return out


def fill_frozen_bn_stats(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> list[str]:
    """Adds ``running_mean`` = 0 and ``running_var`` = 1 where a norm has weight and bias only.

    detectron2's FrozenBatchNorm2d does this for Caffe2-converted files without version metadata
    (the pickles): their scale and shift are already folded into ``weight`` and ``bias``. Returns the
    filled keys.
    """
    filled = []
    for k, ref in expected.items():
        if k in state or not (k.endswith(".norm.running_mean") or k.endswith(".norm.running_var")):
            continue
        if k.rsplit(".", 1)[0] + ".weight" in state:
            state[k] = torch.zeros_like(ref) if k.endswith("running_mean") else torch.ones_like(ref)
            filled.append(k)
    return filled


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                     path: Optional[PathLike], layout: str) -> None:
    """Raises WeightsError naming every missing, unexpected and mis-shaped key (first 10 of each)."""
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    shapes = sorted(f"{k}: file {tuple(state[k].shape)}, detector {tuple(v.shape)}"
                    for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape))
    if not (missing or unexpected or shapes):
        return
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            parts.append(f"{len(items)} {title}: {', '.join(items[:10])}{more}")
    raise WeightsError(path, None, f"does not fit the detector as layout {layout!r}: " + "; ".join(parts)
                       + ". Check --layout and the detector size (a model without the attribute head has no "
                         "cls_embedding/fc_attr/attr_score).")
