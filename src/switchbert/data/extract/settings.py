"""Extraction settings from their text form: ``--boxes``, ``--conventions`` presets, ``--set KEY=VALUE``
overrides and a detector-config JSON, each checked with a message naming what is wrong.

``switchbert features extract`` (``commands/data.py``) parses its arguments and calls these.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from switchbert.data.extract.config import (CAFFE_CONVENTIONS, HF_PORT_CONVENTIONS, DetectorConfig, ExtractConfig,
                                            parse_boxes)

PRESETS = {"py-bua": {}, "caffe": CAFFE_CONVENTIONS, "hf": HF_PORT_CONVENTIONS}


def _coerce(name: str, text: str, current):
    """A ``--set`` value in the type of the field's default."""
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"--set {name}={text}: expected true or false")
        return text.lower() in ("true", "1", "yes")
    if isinstance(current, tuple):
        return tuple(float(x) for x in text.split(","))
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    return text


def build_config(boxes: str = "36", conventions: str = "py-bua", sets: Sequence[str] = ()) -> ExtractConfig:
    """ExtractConfig from ``--boxes``, a preset and ``--set KEY=VALUE`` overrides (unknown keys are errors)."""
    if conventions not in PRESETS:
        raise ValueError(f"--conventions {conventions!r}: choose one of {sorted(PRESETS)}")
    lo, hi = parse_boxes(boxes)
    values = dict(PRESETS[conventions], min_boxes=lo, max_boxes=hi)
    defaults = {f.name: f.default for f in dataclasses.fields(ExtractConfig)}
    for item in sets:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"--set {key}: unknown setting; known: {', '.join(sorted(defaults))}")
        values[key] = _coerce(key, text.strip(), defaults[key])
    return ExtractConfig(**values)


def load_detector_config(path) -> DetectorConfig:
    """DetectorConfig from a JSON object of its fields (lists become tuples)."""
    data = json.loads(Path(path).read_text())
    names = {f.name for f in dataclasses.fields(DetectorConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown detector fields {unknown}; known: {sorted(names)}")
    return DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
