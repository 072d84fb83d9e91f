"""``switchbert features extract``: turn parsed arguments into an extractor and a folder run.

Kept in the library (not in commands/) so that the settings parsing is testable without argparse;
commands/data.py only parses and calls :func:`run_extract`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
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


def run_extract(args) -> int:
    from switchbert.data.extract.api import RegionExtractor
    from switchbert.data.extract.pipeline import extract_folder

    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    config = build_config(args.boxes, args.conventions, args.set)
    detector = load_detector_config(args.detector_config) if args.detector_config else None
    extractor = RegionExtractor(args.weights, config=config, detector=detector, device=args.device,
                                layout=args.layout)
    w = extractor.weights
    print(f"weights {w.path}: sha256 {w.sha256}, layout {w.layout}"
          + (f", {w.filled_bn_stats} frozen-norm statistics filled (0/1)" if w.filled_bn_stats else ""),
          file=sys.stderr)
    summary = extract_folder(args.images, extractor, args.out, args.format, args.batch_size,
                             skip_bad=not args.strict, progress_interval=args.progress_every)
    skipped = sum(summary.skipped.values())
    print(f"wrote {summary.written} images to {args.out} ({args.format}); {summary.computed} computed now, "
          f"{summary.resumed} from an earlier run's journal, {skipped} skipped, {summary.seconds:.1f} s")
    if skipped:
        kinds = ", ".join(f"{n} {k}" for k, n in summary.skipped.most_common())
        print(f"warning: skipped {skipped} bad images ({kinds}); e.g. " + " | ".join(summary.skipped_examples[:3]),
              file=sys.stderr)
    return 0
