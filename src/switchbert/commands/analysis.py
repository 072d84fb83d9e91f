"""``switchbert routes``, ``switchbert flops`` and ``switchbert route-dynamics``.

    switchbert routes MODEL_DIR DATA_DIR --task refexp --split val --out report/
    switchbert flops switchbert-base --text-len 38 --regions 36 --samples 120000 --epochs 20
    switchbert route-dynamics run/metrics.jsonl --out report/

DATA_DIR is a directory with a ``manifest.json`` naming the files of each task (keys below), paths
relative to the directory or absolute. ``switchbert synth`` writes one; for the real datasets write one
by hand with the same keys (the data keys each task declares, ``switchbert.train.tasks``):

    features                                  region-feature store (any format the data layer reads)
    vqa_{train,val}_questions                 VQAv2 questions JSON (answers are not needed)
    flickr_{train,val,test}                   Flickr30k JSON lines
    refcoco_refs, refcoco_instances           RefCOCO+ refs(unc).p and instances.json

The task builds the samples (``switchbert.train.tasks.manifest.task_batches``) with its own text length
and protocol; ``--set data.vqa_protocol=trainval`` analyses VQA's minival as ``val``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Optional

import torch

# Re-exported: the demo (and scripts) read route-analysis batches from here.
from switchbert.train.tasks.manifest import MissingManifestKey, analysis_batches, manifest_task, task_batches

__all__ = ["MissingManifestKey", "TASKS", "register", "resolve_model_dir", "task_batches"]

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("vqa", "retrieval", "refexp")


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``routes``, ``flops`` and ``route-dynamics``."""
    p = subparsers.add_parser("routes", help="which attention mode and input each layer chooses, per task (paper Fig. 4)")
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a model directory (save_pretrained), a checkpoint, or a run directory (its best/, else last/)")
    p.add_argument("data", metavar="DATA", nargs="?", default=None,
                   help="directory with manifest.json (e.g. written by `switchbert synth`); omitted for a run "
                        "directory, whose config.yaml names the task, its files, text length and protocol")
    p.add_argument("--task", default="all", choices=TASKS + ("all",))
    p.add_argument("--split", default="val",
                   help="split to analyse: train, val, test (VQA: also minival; RefCOCO+: test = testA + testB, "
                        "or testA/testB; default val, which under data.vqa_protocol=trainval is VQA's minival)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="experiment-config override applied to every task's data (repeatable), as for "
                        "`switchbert train`: e.g. data.vqa_protocol=trainval, data.max_text_len=30")
    p.add_argument("--max-samples", type=int, default=None, help="analyse a random subset of this many samples per task")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--top", type=int, default=10, help="most frequent architectures to list")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-samples subset")
    p.add_argument("--out", required=True, help="report directory (routes.md, routes.json, PNGs)")
    p.set_defaults(func=run_routes)

    f = subparsers.add_parser("flops", help="forward FLOPs per sample and over a training run vs the fixed baselines (Table 7)")
    f.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="a preset name, a model directory or a run directory (not needed with --metrics)")
    f.add_argument("--text-len", type=int, default=None,
                   help="text tokens T incl. [CLS]/[SEP] (default: a run's data.max_text_len, else 38)")
    f.add_argument("--regions", type=int, default=None,
                   help="detected regions; R = regions + 1 (IMG) (default: a run's data.max_regions, else 36)")
    f.add_argument("--samples", type=int, default=None,
                   help="training samples per epoch (default: a run's training set, else 1, or with --routes "
                        "the samples analysed)")
    f.add_argument("--epochs", type=float, default=None, help="default: a run's train.epochs, else 1")
    f.add_argument("--routes", default=None, help="routes.json from `switchbert routes`: use the measured routes and "
                   "token counts instead of uniform routing at --text-len/--regions")
    f.add_argument("--baseline", action="append", default=None, metavar="PRESET_OR_DIR",
                   help="fixed model(s) to compare with (repeatable); default UNITER, LXMERT, ViLBERT at the model's size")
    f.add_argument("--metrics", default=None, metavar="METRICS_JSONL",
                   help="a training run's metrics.jsonl: FLOPs along its training routes (Table 7), integrated "
                        "over the logged steps, with active paths counted at train.route_active_threshold")
    f.add_argument("--global-batch", type=int, default=None,
                   help="with --metrics: samples per step (default: train.batch_size of the run's config.yaml)")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=run_flops)

    d = subparsers.add_parser("route-dynamics", help="plot per-layer switch probabilities vs step (and tau) from a metrics JSONL")
    d.add_argument("metrics", metavar="METRICS",
                   help="a run directory (its metrics.jsonl) or a JSONL with step, tau and routes/sab/L{i}/{mode} keys")
    d.add_argument("--out", required=True, help="directory for route_dynamics_sab.png (and _sib.png)")
    d.set_defaults(func=run_dynamics)


# -- routes ---------------------------------------------------------------------------------------------


def resolve_model_dir(path: str | Path) -> Path:
    """The model directory behind ``path``: a model directory or checkpoint itself, else a run directory's
    ``best/`` (then ``last/``), as ``switchbert evaluate`` and ``model.init_from`` resolve it."""
    from switchbert.train.checkpoint import resolve_checkpoint

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model or run directory")
    return resolve_checkpoint(path)


def run_routes(args: argparse.Namespace) -> int:
    from switchbert.weights.pretrained import load_pretrained

    from switchbert.analysis.report import write_report
    from switchbert.analysis.routes import collect_routes

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_pretrained(resolve_model_dir(args.checkpoint), map_location="cpu").to(device)
    if not model.config.switches_attention and model.config.sib is None:
        log.warning("%s is a fixed architecture: every sample takes the same route", model.config.name)
    if args.data is None:
        return _routes_of_run(args, model, device)
    data = Path(args.data)
    tasks = TASKS if args.task == "all" else (args.task,)
    stats, missing = {}, []
    for task in tasks:
        try:
            t = manifest_task(data, task, args.split, args.overrides, output_dir=Path(args.out) / "cache")
        except MissingManifestKey as e:
            if args.task != "all":
                raise
            missing.append((task, str(e)))  # --task all: analyse the tasks the manifest has
            continue
        split = t.analysis_split(args.split)  # the task's own: val under VQA's trainval is minival
        batches, n = analysis_batches(t, args.split, args.batch_size, args.max_samples, args.seed)
        log.info("%s/%s: %d samples", task, split, n)
        stats[task] = collect_routes(model, batches, device, top_n=args.top, task=f"{task} ({split})")
    for task, why in missing:
        print(f"skipped {task}: {why}")
    if not stats:
        raise ValueError(f"{data}/manifest.json names the files of none of {', '.join(TASKS)} "
                         f"on split {args.split!r}; see `switchbert routes --help` for its keys")
    return _print_routes(args, stats, model)


def run_config_path(path: str | Path) -> Optional[Path]:
    """The ``config.yaml`` of the run ``path`` is, or whose checkpoint (``best/``, ``last/``) it is; None."""
    path = Path(path)
    for candidate in (path / "config.yaml", path.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    return None


def _routes_of_run(args: argparse.Namespace, model: Any, device: torch.device) -> int:
    """``switchbert routes RUN``: the run's own task, files, text length and protocol (its config.yaml)."""
    from switchbert.analysis.routes import collect_routes
    from switchbert.train.config import load_config
    from switchbert.train.tasks import build_task

    config_path = run_config_path(args.checkpoint)
    if config_path is None:
        raise ValueError(f"{args.checkpoint}: not a run directory (no config.yaml here or beside it); give DATA, a "
                         "directory with a manifest.json (see `switchbert routes --help`)")
    config = load_config(config_path, args.overrides)
    if args.task not in ("all", config.task):
        raise ValueError(f"--task {args.task}: {config_path} is a {config.task} run; give DATA to analyse another task")
    t = build_task(config)
    split = t.analysis_split(args.split)
    batches, n = analysis_batches(t, args.split, args.batch_size, args.max_samples, args.seed)
    log.info("%s/%s: %d samples (from %s)", config.task, split, n, config_path)
    stats = {config.task: collect_routes(model, batches, device, top_n=args.top, task=f"{config.task} ({split})")}
    return _print_routes(args, stats, model)


def _print_routes(args: argparse.Namespace, stats: dict[str, Any], model: Any) -> int:
    from switchbert.analysis.report import write_report

    files = write_report(args.out, stats, config=model.config)
    for task, s in stats.items():
        top = s.top_architectures[0] if s.top_architectures else None
        share = f"{top.share:.2%}" if top else "-"
        print(f"{task}: {s.num_samples} samples, {s.num_architectures} architectures, most frequent {share}"
              + (f": {top.signature}" if top is not None and top.layers else ""))
        if s.switcher_confidence():  # how sure the switchers are, in words (near-ties are not findings)
            print("  " + s.confidence_note().replace("**", ""))
    print(f"wrote {files.markdown}, {files.json} and {sum(len(v) for v in files.figures.values())} figures")
    return 0


# -- flops ----------------------------------------------------------------------------------------------


def _config(name: str):
    from switchbert.presets import PRESETS, RETIRED_PRESETS, get_config
    from switchbert.weights.pretrained import read_config

    if name in PRESETS or name in RETIRED_PRESETS:  # a retired name: get_config says what replaced it
        return get_config(name)
    if Path(name).is_dir():
        return read_config(resolve_model_dir(name))
    raise ValueError(f"{name!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model or run directory")


def run_flops(args: argparse.Namespace) -> int:
    from switchbert.analysis.flops import NOTIONS, default_baselines, expected_flops, fixed_flops, flops_over_run
    from switchbert.analysis.report import load_report

    if args.metrics:
        return _run_training_flops(args)
    if args.model is None:
        raise ValueError("switchbert flops: give MODEL (a preset or a model directory), or --metrics METRICS_JSONL")
    config = _config(args.model)
    baselines = ({_config(b).name: _config(b) for b in args.baseline} if args.baseline
                 else default_baselines(config))
    _run_defaults(args)
    T, R = args.text_len, args.regions + 1
    result: dict[str, Any] = {"model": config.name, "text_len": T, "region_tokens": R}
    per_sample = []
    if config.arch == "switchbert" and (config.switches_attention or config.sib is not None):
        for phase, training in (("training, uniform routing", True), ("inference, hard route, mean over modes", False)):
            e = expected_flops(config, T, R, training)
            per_sample += [(config.name, f"{phase} ({n})", e[n].total, e[n].attention) for n in NOTIONS]
    else:
        b = fixed_flops(config, T, R)
        per_sample.append((config.name, "fixed", b.total, b.attention))
    for name, c in baselines.items():
        b = fixed_flops(c, T, R)
        per_sample.append((name, "fixed", b.total, b.attention))
    result["per_sample"] = [dict(model=m, notion=n, gflops=t / 1e9, attention_gflops=a / 1e9)
                            for m, n, t, a in per_sample]
    if args.routes:
        runs = {task: flops_over_run(s, config, samples=args.samples, epochs=args.epochs, baselines=baselines)
                for task, s in load_report(args.routes).items()}
    else:
        runs = {"uniform routing": flops_over_run((T, R), config, samples=args.samples or 1, epochs=args.epochs,
                                          baselines=baselines)}
    result["runs"] = {k: v.to_dict() for k, v in runs.items()}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"Forward FLOPs per sample at T={T} text + R={R} region tokens (IMG + {args.regions} regions):\n")
    print("| model | notion | GFLOPs | of which attention |\n|---|---|---:|---:|")
    for m, n, t, a in per_sample:
        print(f"| {m} | {n} | {t / 1e9:.3f} | {a / 1e9:.3f} |")
    for task, run in runs.items():
        print(f"\n{task}:\n{run.to_markdown()}")
    return 0


def _run_defaults(args: argparse.Namespace) -> None:
    """``flops RUN``: text length, regions, training-set size and epochs from the run's config.yaml, for
    whatever was not given on the command line; else the controlled setting's 38 tokens, 36 regions."""
    config_path = run_config_path(args.model) if Path(args.model).is_dir() else None
    if config_path is not None:
        from switchbert.train.config import load_config
        from switchbert.train.tasks import build_task

        config = load_config(config_path)
        if args.text_len is None:
            args.text_len = config.data.max_text_len
        if args.regions is None:
            args.regions = config.data.max_regions
        if args.epochs is None:
            args.epochs = float(config.train.epochs)
        if args.samples is None and not args.routes:
            try:
                args.samples = len(build_task(config).train_dataset())
            except (OSError, ValueError) as e:  # the data moved: say so, count per sample
                log.warning("%s: cannot read the training set (%s); counting one sample", config_path, e)
        log.info("from %s: text length %d, %d regions, %s training samples, %g epochs", config_path,
                 args.text_len, args.regions, args.samples, args.epochs)
    args.text_len = 38 if args.text_len is None else args.text_len
    args.regions = 36 if args.regions is None else args.regions
    args.epochs = 1.0 if args.epochs is None else args.epochs


def _run_training_flops(args: argparse.Namespace) -> int:
    """``switchbert flops MODEL --metrics run/metrics.jsonl``: the run's own count from its log."""
    import yaml

    from switchbert.analysis.flops import flops_from_training_log
    from switchbert.io import read_jsonl

    path = Path(args.metrics)
    batch = args.global_batch
    if batch is None:
        cfg = path.parent / "config.yaml"
        if not cfg.is_file():
            raise ValueError(f"{path}: no config.yaml beside it to read train.batch_size from; pass --global-batch")
        batch = int((yaml.safe_load(cfg.read_text()) or {}).get("train", {}).get("batch_size", 0))
        if batch <= 0:
            raise ValueError(f"{cfg}: no train.batch_size; pass --global-batch")
    run = flops_from_training_log(read_jsonl(path), batch)
    if args.json:
        print(json.dumps({"steps": run.steps, "global_batch": run.global_batch,
                          "active_threshold": run.active_threshold, "totals_forward": run.totals,
                          "series": run.series}, indent=2))
    else:
        print(run.to_markdown())
    return 0


# -- dynamics -------------------------------------------------------------------------------------------


def run_dynamics(args: argparse.Namespace) -> int:
    from switchbert.analysis.plots import plot_training_dynamics, read_metrics

    metrics = Path(args.metrics)
    if metrics.is_dir():  # a run directory, or one of its checkpoints
        found = [p for p in (metrics / "metrics.jsonl", metrics.parent / "metrics.jsonl") if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{metrics}: no metrics.jsonl in it or beside it (is it a run directory?)")
        metrics = found[0]
    records = read_metrics(metrics)
    out = Path(args.out)
    written = [plot_training_dynamics(records, out / "route_dynamics_sab.png", "sab")]
    if any(k.startswith("routes/sib/") for r in records for k in r):
        written.append(plot_training_dynamics(records, out / "route_dynamics_sib.png", "sib"))
    if any("flops/paper" in r for r in records):  # active paths and FLOPs along the run (Table 7)
        from switchbert.analysis.plots import plot_active_paths

        written.append(plot_active_paths(records, out / "route_dynamics_active.png"))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
