"""Reading a detector weight file: format, layout, sha256, and a loaded BottomUpDetector.

``.pkl`` files go through the restricted unpickler (numpy arrays and built-in values only; a pickle
that names anything else is refused before it runs); everything else through
``torch.load(weights_only=True)``. Nothing is downloaded: docs/data.md says where the files are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from switchbert.data.errors import PathLike
from switchbert.data.extract.config import DetectorConfig
from switchbert.data.extract.detector import BottomUpDetector
from switchbert.data.extract.keymaps import (LAYOUTS, WeightsError, check_state_dict, detect_layout,
                                             fill_frozen_bn_stats, to_canonical)


@dataclass
class WeightsInfo:
    """Where a detector's weights came from (recorded in the store's metadata)."""

    path: str
    sha256: str
    layout: str
    size_bytes: int
    filled_bn_stats: int

    def as_dict(self) -> dict:
        return {"file": Path(self.path).name, "sha256": self.sha256, "layout": self.layout,
                "size_bytes": self.size_bytes, "filled_bn_stats": self.filled_bn_stats}


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_weights_file(path: PathLike) -> dict[str, torch.Tensor]:
    """The file's tensors by name (a ``{"model": ...}`` wrapper unwrapped); WeightsError if unreadable."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(p, None, "weights file not found")
    if p.suffix == ".pkl":
        from switchbert.data.safe_pickle import safe_load_file

        obj = safe_load_file(p, encoding="latin1")  # detectron2 pickles may come from Python 2
    else:
        from switchbert.data.safe_pickle import torch_load_weights

        try:
            obj = torch_load_weights(p, map_location="cpu")
        except (RuntimeError, EOFError, OSError) as exc:
            raise WeightsError(p, None, f"cannot read as a torch file: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise WeightsError(p, None, f"expected a dict of tensors (or {{'model': ...}}), found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        elif not isinstance(v, torch.Tensor):
            continue  # bookkeeping entries ("__author__", "matching_heuristics")
        out[str(k)] = v
    return out


def load_detector(path: PathLike, cfg: Optional[DetectorConfig] = None, layout: str = "auto",
                  device: Union[str, torch.device] = "cpu") -> tuple[BottomUpDetector, WeightsInfo]:
    """Builds the detector, loads ``path`` through its layout's key map, checks every key and shape.

    Args:
        layout: "auto" (from the keys), or one of keymaps.LAYOUTS.

    Returns:
        The detector in eval mode on ``device``, and where its weights came from.
    """
    cfg = cfg or DetectorConfig()
    raw = read_weights_file(path)
    if layout == "auto":
        layout = detect_layout(raw)
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown weights layout {layout!r}; choose one of {LAYOUTS} or 'auto'")
    model = BottomUpDetector(cfg)
    expected = model.state_dict()
    state = to_canonical(raw, layout, cfg, path)
    filled = fill_frozen_bn_stats(state, expected) if layout == "py-bua" else []
    check_state_dict(expected, state, path, layout)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    info = WeightsInfo(str(path), sha256_file(path), layout, Path(path).stat().st_size, len(filled))
    return model.eval().to(device), info


def random_detector(cfg: Optional[DetectorConfig] = None, seed: int = 0) -> BottomUpDetector:
    """A detector with random weights whose activations stay in range (benchmarks, tests, comparisons).

    Convs get He-normal weights, frozen norms a scale near 1 and small shifts and statistics, so a
    101-layer stack neither explodes nor dies and the RPN ranks proposals by something.
    """
    g = torch.Generator().manual_seed(seed)
    model = BottomUpDetector(cfg)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("conv3.norm.weight"):
                # small residual branches (the zero-init-last-BN idea): 30 blocks stay in range
                t.copy_(0.1 + 0.2 * torch.rand(t.shape, generator=g))
            elif name.endswith("norm.weight"):
                t.copy_(0.5 + 0.2 * torch.rand(t.shape, generator=g))
            elif name.endswith("norm.bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("bbox_pred.weight") or name.endswith("anchor_deltas.weight"):
                # small deltas (detectron2 initialises them at std 0.001 / 0.01): boxes stay boxes
                t.copy_(torch.randn(t.shape, generator=g) * 1e-3 / (t[0].numel() ** 0.5 / 32))
            elif name.endswith("cls_score.weight") or name.endswith("attr_score.weight"):
                # logits of a few units: class distributions that are neither one-hot nor flat
                t.copy_(torch.randn(t.shape, generator=g) * 0.15 / t.shape[1] ** 0.5)
            elif t.dim() == 4:
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif t.dim() == 2:
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / t.shape[1]) ** 0.5)
            elif t.dim() == 1 and t.dtype.is_floating_point:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return model.eval()
