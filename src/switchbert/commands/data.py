"""The data commands: ``features convert|inspect|extract`` and ``synth`` (``switchbert.data`` does the work).

The main CLI calls :func:`register` with its argparse subparsers; every command sets
``func(args) -> int`` (the exit status).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from switchbert.data.errors import DataError, DataWarning
from switchbert.data.features import FORMATS, convert_store, inspect_store


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``features {convert,inspect,extract}`` and ``synth`` to ``subparsers``."""
    feats = subparsers.add_parser("features", help="region-feature stores: convert, inspect, extract")
    fsub = feats.add_subparsers(dest="features_command", required=True)

    conv = fsub.add_parser("convert", help="convert a feature store (VOLTA LMDB, base64 LMDB, H5, fast) to another format")
    conv.add_argument("src", help="source store (format detected)")
    conv.add_argument("dst", help="destination (a directory for LMDB formats, a file for h5)")
    conv.add_argument("--format", default="fast", choices=FORMATS, help="destination format (default: fast)")
    conv.add_argument("--skip-bad", action="store_true", help="skip bad records (counted, warned) instead of failing")
    conv.set_defaults(func=_convert)

    insp = fsub.add_parser("inspect", help="count, dimensions, region statistics and a sample of a store")
    insp.add_argument("path")
    insp.add_argument("--sample-id", default=None, help="image id to show (default: the first)")
    insp.add_argument("--sample-size", type=int, default=1000, help="images read for the statistics")
    insp.add_argument("--json", action="store_true", help="print JSON")
    insp.set_defaults(func=_inspect)

    ext = fsub.add_parser("extract", help="run the bottom-up-attention detector on images and write a store "
                                          "(docs/data.md, 'From photos to a store')")
    ext.add_argument("images", help="a folder of images (recursive), a .txt list of paths, or one image")
    ext.add_argument("--weights", required=True, help="detector weights: faster_rcnn_from_caffe[_attr].pkl, "
                     "frcnn-vg-finetuned pytorch_model.bin or bua-caffe-frcn-r101-k36.pth")
    ext.add_argument("--out", required=True, help="the store to write (a directory for fast/volta, a file for h5)")
    ext.add_argument("--format", default="fast", choices=("fast", "volta", "h5"), help="store format (default: fast)")
    ext.add_argument("--boxes", default="36", help="regions per image: a count (36) or a range (10-100)")
    ext.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
    ext.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    ext.add_argument("--layout", default="auto", choices=("auto", "py-bua", "hf", "milvlg"),
                     help="the weight file's key layout (default: from its keys)")
    ext.add_argument("--conventions", default="py-bua", choices=("py-bua", "caffe", "hf"),
                     help="preset conventions: py-bua (default; VOLTA's released features), caffe (anchor "
                          "centring and +1 box widths of the original Caffe model), hf (HF's LXMERT port)")
    ext.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="one extraction setting (docs/data.md table), e.g. --set nms_mode=per_class")
    ext.add_argument("--detector-config", default=None, metavar="JSON",
                     help="a JSON file of detector shape fields for non-default weights (tests use a tiny one)")
    ext.add_argument("--strict", action="store_true", help="stop at the first bad image instead of skipping it")
    ext.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    ext.set_defaults(func=_extract)

    syn = subparsers.add_parser("synth", help="write the synthetic benchmark (real formats) into a directory")
    syn.add_argument("dir")
    syn.add_argument("--images", type=int, default=1000)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--feat-dim", type=int, default=2048, help="region feature size (2048 like BUTD)")
    syn.add_argument("--num-classes", type=int, default=1601, help="detector classes in cls_prob (1601 like BUTD)")
    syn.add_argument("--questions-per-image", type=int, default=5)
    syn.add_argument("--abstraction", type=float, default=1.0,
                     help="region features from word-level (0) to entangled random embeddings (1); docs/training.md")
    syn.add_argument("--clutter", type=float, default=1.0, help="duplicate and background regions, 0 (none) to 1")
    syn.add_argument("--noise", type=float, default=0.6, help="std of the detector's feature noise")
    syn.add_argument("--question-types", default=None,
                     help="comma-separated VQA types, or a family: cross_modal, cross_then_intra, intra_modal "
                          "(default: the 7 standard types)")
    syn.set_defaults(func=_synth)


def _fail(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def _convert(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)  # summarised below instead of one line per record
            n, policy = convert_store(args.src, args.dst, args.format, skip_bad=args.skip_bad)
    except DataError as err:
        return _fail(err)
    print(f"wrote {n} images to {args.dst} ({args.format})")
    if policy.skipped:
        print(f"warning: {policy.summary()}", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    try:
        info = inspect_store(args.path, args.sample_size, args.sample_id)
    except DataError as err:
        return _fail(err)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    r = info["regions"]
    print(f"store        {info['path']} ({info['format']})")
    print(f"images       {info['count']}")
    print(f"feature dim  {info['feat_dim']}")
    print(f"classes      {info['num_classes'] if info['num_classes'] is not None else 'none (no cls_prob)'}")
    print(f"regions      min {r['min']}  mean {r['mean']:.1f}  max {r['max']}  over {r['images_sampled']} images; "
          f"{r['images_with_zero']} with none, {r['images_over_36']} over 36")
    print(f"feature norm {r['mean_feature_norm']:.3f} (mean L2 norm of a region)")
    if "sample" in info:
        s = info["sample"]
        print(f"sample       image {s['image_id']}: {s['image_w']:.0f}x{s['image_h']:.0f}, {s['num_regions']} regions, "
              f"first boxes {s['first_boxes_px']}, top classes {s['top_classes']}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    try:
        return run_extract(args)
    except (DataError, ValueError) as err:
        return _fail(err)


def run_extract(args: argparse.Namespace) -> int:
    """``features extract``: the extractor from the arguments, then the folder run; prints a summary."""
    from switchbert.data.extract.api import RegionExtractor
    from switchbert.data.extract.pipeline import extract_folder
    from switchbert.data.extract.settings import build_config, load_detector_config

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


def _question_types(spec):
    from switchbert.data.synth import QUESTION_FAMILIES

    if not spec:
        return None
    return QUESTION_FAMILIES.get(spec) or tuple(t.strip() for t in spec.split(",") if t.strip())


def _synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from switchbert.data.synth import generate
    from switchbert.dirlock import DirectoryLockedError

    if Path(args.dir).exists() and not Path(args.dir).is_dir():
        return _fail(DataError(args.dir, None, "exists and is not a directory; synth writes a directory"))
    try:
        manifest = generate(args.dir, args.images, args.seed, feat_dim=args.feat_dim, num_classes=args.num_classes,
                            questions_per_image=args.questions_per_image, abstraction=args.abstraction,
                            clutter=args.clutter, noise=args.noise, question_types=_question_types(args.question_types))
    except (ValueError, DirectoryLockedError) as err:  # bad knobs; another process writing this directory
        return _fail(err)
    st = manifest["stats"]
    print(f"wrote {args.images} synthetic images to {args.dir} in {st['seconds']} s "
          f"(text-only VQA accuracy {st['text_only_vqa_accuracy']:.3f}); manifest: {args.dir}/manifest.json")
    return 0
