"""The experiment config: typed dataclasses, one YAML file per experiment, dotted overrides.

    task: vqa                      # pretrain | vqa | retrieval | refexp
    output_dir: runs/vqa/switchbert
    model: {preset: switchbert-base, bert_dir: null, init_from: runs/pretrain/switchbert, overrides: {}}
    data:  {root: data/vqa, features: features.lmdb, max_text_len: 23, ...}
    train: {epochs: 20, batch_size: 256, lr: 1.0e-4, ...}
    eval:  {batch_size: 512, splits: [val]}

``load_config(path, ["train.lr=2e-5", "model.preset=uniter-base"])`` reads the file, applies the
overrides (values parsed as YAML), and checks every key and type. An unknown key, a wrong type or a bad
value is a ``ConfigError`` naming the file and the dotted key. ``train.preflight.check_paths`` (called by the commands
before any work) checks that every file the task needs exists. docs/training.md lists every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from switchbert.recipes import resolve_config

TASKS: tuple[str, ...] = ("pretrain", "vqa", "retrieval", "refexp")


class ConfigError(ValueError):
    """A bad experiment config: names the file and the dotted key."""


@dataclass
class ModelSection:
    """Which model, and where its weights start.

    Attributes:
        preset: a name in ``switchbert.PRESETS``, or ``from_checkpoint``. When ``init_from`` is a run,
            checkpoint or model directory, its config.json fixes the architecture and the preset must
            name the same model (family, switches, size), or be ``from_checkpoint`` to train whatever
            ``init_from`` holds; a mismatch is an error naming both.
        bert_dir: local HF BERT directory; initialises text embeddings and layers (docs/method.md §5). A
            fine-tuning run with ``bert_dir`` and no ``init_from`` is the paper's "no pretraining".
        init_from: a pretraining run directory (its ``best/``, else ``last/``), a checkpoint
            directory (``.../best``), a model directory (``config.json`` + ``model.safetensors``), or
            a state-dict file (``.safetensors``/``.pt``/``.bin``, keys must fit ``preset``: an
            imported checkpoint).
        overrides: ``ModelConfig`` fields applied to the preset (e.g. ``{top_k: 2, sib: null}``); with a
            model directory only runtime fields such as dropout or ``attention_impl`` make sense.
    """

    preset: str = "switchbert-base"
    bert_dir: Optional[str] = None
    init_from: Optional[str] = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSection:
    """Where the data is and how it is read: one flat section for every task (the recipes' schema).

    Each task declares the path keys it reads (``required_files``, ``optional_files``,
    ``lazy_files`` of its class in ``switchbert/train/tasks/``) and builds its datasets from them;
    ``check_paths`` asks it. The path keys are also those of a data manifest (``switchbert synth``).
    Relative paths resolve against ``root`` (itself relative to the working directory). Only the
    paths of the configured task must exist.
    """

    root: str = "."
    features: str = "features.lmdb"
    max_text_len: int = 38
    max_regions: int = 36
    num_workers: int = 0
    # Train on a random fraction of the training items (paper: 25% / 50% pretraining study).
    fraction: float = 1.0
    # Hold out this fraction of the TRAINING images as split "heldout" and select the model on it, for a
    # user whose only annotated held-out set is their test set (0 = off; docs/training.md). The held-out
    # images are fixed by val_from_train_seed (not train.seed), so every seed of a recipe shares them.
    val_from_train: float = 0.0
    val_from_train_seed: int = 0
    skip_bad: bool = False
    # Every task reads features and the settings above (pretraining refuses val_from_train); each key
    # below is read by one task, which declares it:
    # pretrain: PretrainTask (train/tasks/pretrain.py); Conceptual Captions JSON: image id -> caption
    cc_train: Optional[str] = None
    cc_valid: Optional[str] = None
    mrc: bool = True
    # vqa: VQATask (train/tasks/vqa.py); official VQAv2 JSONs; test questions have no annotations
    # (server result file only)
    vqa_train_questions: Optional[str] = None
    vqa_train_annotations: Optional[str] = None
    vqa_val_questions: Optional[str] = None
    vqa_val_annotations: Optional[str] = None
    vqa_test_questions: Optional[str] = None  # test-dev2015 questions -> vqa_results_test-dev.json
    vqa_test_std_questions: Optional[str] = None  # test2015 questions -> vqa_results_test-std.json
    vqa_answer_vocab: Optional[str] = None  # JSON list; null = the top vqa_num_answers of train+val
    vqa_num_answers: int = 3129
    # "train": train on train, select on val; "trainval" (paper/VOLTA protocol): train on train + val
    # minus a held-out minival (the last vqa_minival_size val questions by id), select on minival.
    vqa_protocol: str = "train"
    vqa_minival_size: int = 3000
    # retrieval: RetrievalTask (train/tasks/retrieval.py); Flickr30k JSON lines
    flickr_train: Optional[str] = None
    flickr_val: Optional[str] = None
    flickr_test: Optional[str] = None
    hard_negatives_k: int = 20
    # refexp: RefExpTask (train/tasks/refexp.py); REFER refs(unc).p + COCO instances.json
    refcoco_refs: Optional[str] = None
    refcoco_instances: Optional[str] = None
    # RefCOCO+ training recipe (RefExpTask; docs/heads_and_metrics.md):
    refexp_target: str = "iou"  # "iou": raw IoU (VOLTA); "iou_0.5": IoU zeroed below 0.5 (ViLBERT)
    refexp_iou: str = "continuous"  # "continuous": areas w * h (ours); "volta": +1-pixel box sides
    refexp_loss: str = "mean"  # "mean": per region (ours); "volta": BCE summed over regions, mean over sentences
    refexp_add_gt_box: bool = False  # ViLBERT: add the ground-truth-box regions to the training regions
    refcoco_gt_features: Optional[str] = None  # store of those regions (keyed by image id), for refexp_add_gt_box

    def path(self, key: str) -> Optional[Path]:
        """The resolved path of a path key, or None when unset."""
        value = getattr(self, key)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.root).expanduser() / p


@dataclass
class TrainSection:
    """The optimisation recipe (docs/method.md §6-§7). ``batch_size`` is the GLOBAL batch per optimizer step
    (over all processes and accumulation steps), so a recipe means the same on 1 or 8 GPUs."""

    epochs: int = 10
    max_steps: Optional[int] = None  # cap on optimizer steps (the schedules then span max_steps)
    stop_after: Optional[int] = None  # stop (and write last/) after this many steps; resume later
    batch_size: int = 256
    grad_accum: int = 1
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.01
    warmup: float = 0.1  # fraction of the stage's steps
    clip: Optional[float] = 5.0  # max gradient norm; null = no clipping
    amp: bool = True  # bf16 autocast on GPU; CPU always runs float32
    seed: int = 0
    tau_max: float = 5.0
    tau_min: float = 0.1
    tau_kind: str = "exp"
    # Learning-rate multiplier of the switchers' parameters (SAB and SIB MLPs) [ours, docs/training.md
    # "Switcher learning rate"]; 1.0 = one rate for every parameter, the paper's reading.
    switch_lr_scale: float = 1.0
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # pretraining MLM, MRC, ITM
    log_every: int = 50
    # FLOPs along the run (paper Table 7), logged on log steps: a path counts as active (it runs) when its
    # mixture weight is above this (analysis.flops.ACTIVE_WEIGHT_THRESHOLD; docs/analysis.md).
    route_active_threshold: float = 0.01
    # Retrieval: a caption's 4 candidate pairs share one draw of the switchers' Gumbel noise, so the
    # 4-way softmax compares their content rather than four random mode mixtures [ours,
    # docs/method.md §3.2; measured in docs/training.md]. false = independent noise per pair.
    retrieval_shared_noise: bool = True
    checkpoint_every: int = 0  # also write last/ every N steps (0 = at each epoch end only)
    progress: bool = True
    tensorboard: bool = False  # mirror scalars to TensorBoard (needs the tensorboard package; the paper's recipes ask for it)
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False  # run the training forward + backward through torch.compile
    best_metric: Optional[str] = None  # null = the task's default (docs/training.md)


@dataclass
class EvalSection:
    """Validation and evaluation.

    Attributes:
        batch_size: samples (retrieval: pairs) per forward pass, per process.
        splits: what ``switchbert evaluate`` scores by default (null = the task's test splits).
        val_split: the split validated after each epoch.
        retrieval_val_images: validate retrieval on all pairs of the first N val images (0 = all)
            [ours: all-pairs validation of 1,000 images costs 5M forward passes each epoch].
    """

    batch_size: int = 256
    splits: Optional[list[str]] = None
    val_split: str = "val"
    retrieval_val_images: int = 0


@dataclass
class ExperimentConfig:
    """One experiment. ``name`` labels the model in reports (default: derived from the preset)."""

    task: str = "pretrain"
    output_dir: str = "runs/experiment"
    name: Optional[str] = None
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @property
    def report_name(self) -> str:
        """The model's name in result records: ``name``, else the preset without ``-base``, with
        ``-nopretrain`` for a fine-tuning run that starts from BERT only, and ``-<model hash>`` when the
        model section differs from the preset (``model.overrides``, random instead of BERT weights), so
        two variants of one preset are two rows of ``switchbert report``. The name is the same for every
        task, so one model's VQA, retrieval and RefCOCO+ runs fill one row; runs of one model and task
        with different training recipes are told apart by the record's ``recipe`` (:attr:`recipe_hash`)."""
        if self.name:
            return self.name
        base = self.model.preset.removesuffix("-base")
        if self.task != "pretrain" and self.model.init_from is None:
            base += "-nopretrain"
        digest = self._hash(lambda k: k.startswith("model."))
        return f"{base}-{digest}" if digest else base

    @property
    def recipe_hash(self) -> str:
        """6 hex digits of the recipe: every key whose value differs from the default, except the seed,
        paths and settings that do not change what is trained (:data:`NOT_RECIPE`). "" for the defaults.
        The seeds of one recipe share it; result records carry it as ``recipe``."""
        return self._hash(lambda k: True)

    def _hash(self, keep: Any) -> str:
        import hashlib
        import json

        ours, default = _flatten(self.to_dict()), _flatten(ExperimentConfig(task=self.task).to_dict())
        for d in (ours, default):  # bert_dir is a path; whether BERT weights are used is the recipe
            d["model.bert_dir?"] = d.get("model.bert_dir") is not None  # (init_from: the -nopretrain suffix)
        changed = {k: v for k, v in ours.items()
                   if k not in NOT_RECIPE and keep(k) and v != default.get(k, _MISSING)}
        if not changed:
            return ""
        text = json.dumps(changed, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:6]


_MISSING = object()

NOT_RECIPE: frozenset[str] = frozenset({
    # which run and where: the seed is what report aggregates over; paths differ between machines
    "name", "output_dir", "train.seed", "model.preset", "model.bert_dir", "model.init_from",
    "data.root", "data.features", "data.cc_train", "data.cc_valid", "data.vqa_train_questions",
    "data.vqa_train_annotations", "data.vqa_val_questions", "data.vqa_val_annotations", "data.vqa_test_questions",
    "data.vqa_test_std_questions", "data.vqa_answer_vocab", "data.flickr_train", "data.flickr_val",
    "data.flickr_test", "data.refcoco_refs", "data.refcoco_instances", "data.refcoco_gt_features",
    # how the run is executed and logged, not what it learns
    "data.num_workers", "train.stop_after", "train.log_every", "train.checkpoint_every", "train.progress",
    "train.tensorboard", "train.device", "train.compile", "train.route_active_threshold",
    "eval.batch_size", "eval.splits",
})
"""Config keys left out of :attr:`ExperimentConfig.recipe_hash` (and so of the default record name)."""


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (``model.overrides`` gives one key per override)."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


# ------------------------------------------------------------------------------------------ loading
def load_config(path: Union[str, Path], overrides: Optional[list[str]] = None) -> ExperimentConfig:
    """Reads an experiment YAML, applies ``key=value`` overrides, checks keys, types and values.

    Raises:
        ConfigError: naming the file and the dotted key.
    """
    try:
        path = resolve_config(path)  # a file, or a recipe shipped in the package ("vqa/uniter")
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a config YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    for item in overrides or []:
        key, value = parse_override(item, source=str(path))
        set_dotted(raw, key, value, source=f"{path} (override {item!r})")
    return from_dict(raw, source=str(path))


def parse_override(item: str, source: str = "command line") -> tuple[str, Any]:
    """``"train.lr=2e-5"`` -> ("train.lr", 2e-05); the value is parsed as YAML (null, true, [a, b])."""
    if "=" not in item:
        raise ConfigError(f"{source}: override {item!r} must look like key.subkey=value")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{source}: override {item!r} has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str) -> None:
    """Sets ``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(parts[: i + 1])} is not a section, cannot set {key}")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Builds and validates an ``ExperimentConfig`` from plain data."""
    config = _build(ExperimentConfig, raw, prefix="", source=source)
    validate(config, source)
    return config


def save_config(config: ExperimentConfig, path: Union[str, Path]) -> None:
    """Writes the fully resolved config (every key) as YAML, atomically."""
    from switchbert.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        close = difflib.get_close_matches(str(unknown[0]), list(known), n=1)
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        raise ConfigError(
            f"{source}: unknown key {prefix}{unknown[0]} ({hint}in {where}; known keys: {', '.join(sorted(known))})"
        )
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(value, hints[name], f"{prefix}{name}", source)
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Checks ``value`` against the annotation ``tp``; converts lists to tuples and ints to floats."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", source)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, "true or false", value, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, "an integer", value, source)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept what Python reads as a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise _type_error(key, "a number", value, source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, "a string", value, source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, "a list", value, source)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{source}: {key} must have {len(args)} entries, got {list(value)!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, "a mapping", value, source)
        return dict(value)
    raise ConfigError(f"{source}: {key}: unsupported config type {tp!r}")  # a bug in this module


def _type_error(key: str, expected: str, value: Any, source: str) -> ConfigError:
    return ConfigError(f"{source}: {key} must be {expected}, got {value!r} ({type(value).__name__})")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------- validation
def validate(config: ExperimentConfig, source: str = "<config>") -> None:
    """Value checks that need no file system; raises ``ConfigError`` naming the key."""

    def bad(key: str, msg: str) -> None:
        raise ConfigError(f"{source}: {key} {msg}")

    # Every number first: NaN passes "x < 0"-style range checks and inf passes "x > 0", so a range
    # check alone would accept train.lr=.inf or train.weight_decay=.nan.
    for key, value in _numbers(config):
        if not math.isfinite(value):
            bad(key, f"must be a finite number, got {value}")
    if config.task not in TASKS:
        bad("task", f"must be one of {', '.join(TASKS)}, got {config.task!r}")
    if not config.output_dir:
        bad("output_dir", "must not be empty")
    t, d, e = config.train, config.data, config.eval
    for key, value in (("train.epochs", t.epochs), ("train.batch_size", t.batch_size), ("train.grad_accum", t.grad_accum),
                       ("train.log_every", t.log_every), ("data.max_text_len", d.max_text_len),
                       ("data.max_regions", d.max_regions), ("data.vqa_num_answers", d.vqa_num_answers),
                       ("data.hard_negatives_k", d.hard_negatives_k), ("eval.batch_size", e.batch_size)):
        if value < 1:
            bad(key, f"must be >= 1, got {value}")
    for key, value in (("train.max_steps", t.max_steps), ("train.stop_after", t.stop_after)):
        if value is not None and value < 1:
            bad(key, f"must be null or >= 1, got {value}")
    for key, value in (("train.checkpoint_every", t.checkpoint_every), ("data.num_workers", d.num_workers),
                       ("eval.retrieval_val_images", e.retrieval_val_images)):
        if value < 0:
            bad(key, f"must be >= 0, got {value}")
    if d.max_text_len < 2:
        bad("data.max_text_len", "must be >= 2 ([CLS] and [SEP])")
    if t.batch_size % t.grad_accum:
        bad("train.batch_size", f"{t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
    if not 0.0 < d.fraction <= 1.0:
        bad("data.fraction", f"must be in (0, 1], got {d.fraction}")
    if not 0.0 <= d.val_from_train < 1.0:
        bad("data.val_from_train", f"is the fraction of training images held out, in [0, 1), got {d.val_from_train}")
    if not t.lr > 0:
        bad("train.lr", f"must be > 0, got {t.lr}")
    if t.weight_decay < 0:
        bad("train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    if not 0.0 <= t.warmup < 1.0:
        bad("train.warmup", f"is a fraction of the steps in [0, 1), got {t.warmup}")
    if t.clip is not None and not t.clip > 0:
        bad("train.clip", f"must be null (no clipping) or > 0, got {t.clip}")
    if not all(0.0 <= b < 1.0 for b in t.betas):
        bad("train.betas", f"must be two numbers in [0, 1), got {list(t.betas)}")
    if not t.eps > 0:
        bad("train.eps", f"must be > 0, got {t.eps}")
    if not 0.0 <= t.route_active_threshold < 1.0:
        bad("train.route_active_threshold", f"must be in [0, 1), got {t.route_active_threshold}")
    if not t.tau_max >= t.tau_min > 0:
        bad("train.tau_max", f"need tau_max >= tau_min > 0, got tau_max={t.tau_max}, tau_min={t.tau_min}")
    if t.tau_kind not in ("exp", "linear"):
        bad("train.tau_kind", f"must be 'exp' or 'linear', got {t.tau_kind!r}")
    if not (t.switch_lr_scale > 0 and math.isfinite(t.switch_lr_scale)):
        bad("train.switch_lr_scale", f"must be finite and > 0, got {t.switch_lr_scale}")
    if t.device not in ("auto", "cpu", "cuda"):
        bad("train.device", f"must be auto, cpu or cuda, got {t.device!r}")
    if any(w < 0 for w in t.loss_weights) or not sum(t.loss_weights) > 0:
        bad("train.loss_weights", f"must be non-negative and not all 0, got {list(t.loss_weights)}")
    if t.seed < 0:
        bad("train.seed", f"must be >= 0, got {t.seed}")
    _validate_model(config, source)


def _numbers(node: Any, prefix: str = "") -> typing.Iterator[tuple[str, float]]:
    """(dotted key, value) of every float in the config, inside tuples, lists and model.overrides too."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _numbers(getattr(node, f.name), f"{prefix}.{f.name}" if prefix else f.name)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _numbers(v, f"{prefix}.{k}")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _numbers(v, f"{prefix}[{i}]")
    elif isinstance(node, float):
        yield prefix, node


def _validate_model(config: ExperimentConfig, source: str) -> None:
    """The preset exists and the overrides are valid ModelConfig fields and values."""
    from switchbert.presets import PRESETS, RETIRED_PRESETS, get_config

    m = config.model
    from_checkpoint = m.preset == "from_checkpoint"  # models.build.FROM_CHECKPOINT
    if from_checkpoint and m.init_from is None:
        raise ConfigError(f"{source}: model.preset: from_checkpoint trains the model that model.init_from holds, "
                          f"but model.init_from is null")
    if m.init_from is not None and Path(m.init_from).suffix == "" and (from_checkpoint or not m.overrides):
        if from_checkpoint:
            _check_override_names(m.overrides, source)  # the values are checked on the loaded config
        return  # a model directory fixes the architecture; preflight checks the preset against it
    if m.preset in RETIRED_PRESETS:
        raise ConfigError(f"{source}: model.preset: preset {m.preset!r} was retired: {RETIRED_PRESETS[m.preset]}")
    if m.preset not in PRESETS:
        close = difflib.get_close_matches(m.preset, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{source}: model.preset: unknown preset {m.preset!r}{hint}; "
                          f"available: {', '.join(sorted(PRESETS))}")
    _check_override_names(m.overrides, source)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in m.overrides.items()}
    try:
        get_config(m.preset, **overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: model.overrides: {e}") from None


def _check_override_names(overrides: dict[str, Any], source: str) -> None:
    """Every ``model.overrides`` key is a ``ModelConfig`` field (with a "did you mean" when close)."""
    from switchbert.config import ModelConfig

    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean model.overrides.{close[0]}?)" if close else ""
            raise ConfigError(f"{source}: model.overrides: unknown ModelConfig fields [{key!r}]{hint}; "
                              f"known fields: {', '.join(fields)}")
