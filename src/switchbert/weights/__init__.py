"""Checkpoint import: VOLTA controlled-setting state dicts and HF transformers VisualBERT / LXMERT.

    from switchbert.weights import load_hf, load_volta
    model, heads, report = load_volta("volta/lxmert.bin", switchbert.get_config("lxmert-base"))
    print(report.summary())

Every importer works from an explicit key map (ours -> theirs, built from ``weights/keymaps.py``),
checks every shape, and returns an ``ImportReport`` listing unused checkpoint keys and parameters left
random.

The names below are resolved on first use: the model classes import ``weights.keymaps``, and the
importers import the model classes, so importing this package must not import the importers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImportReport": "switchbert.weights.state_dict",
    "read_state_dict": "switchbert.weights.state_dict",
    "config_from_hf": "switchbert.weights.hf",
    "import_hf": "switchbert.weights.hf",
    "load_hf": "switchbert.weights.hf",
    "import_volta": "switchbert.weights.volta",
    "load_volta": "switchbert.weights.volta",
    "volta_config": "switchbert.weights.volta",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
