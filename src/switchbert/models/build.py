"""The one way to build a model, and the one way to load a model directory.

    build_model("switchbert-base", bert_dir="bert-base-uncased")   # a preset, BERT-initialised
    build_model(config)                                             # a ModelConfig, random weights
    build_model("uniter-base", init_from="runs/pretrain")           # what a training run starts from
    load_pretrained("runs/vqa")                                     # a model dir, a checkpoint or a run

``switchbert.create_model`` and ``train.trainer.initial_model`` both end here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from switchbert.config import ModelConfig
from switchbert.models.base import VLModel
from switchbert.models.directory import CONFIG_NAME, TrainingInfo, check_state_dict, read_config, resolve_checkpoint
from switchbert.models.lxmert import LxmertModel
from switchbert.models.switchbert import SwitchBertModel
from switchbert.models.vilbert import ViLBertModel
from switchbert.presets import get_config
from switchbert.weights.bert import init_from_bert
from switchbert.weights.state_dict import read_state_dict

MODEL_CLASSES: dict[str, type[VLModel]] = {
    # Single stream: Switch-BERT, and with one mode and no SIB, UNITER / VisualBERT / VL-BERT.
    "switchbert": SwitchBertModel,
    # Dual stream baselines (docs/method.md §5).
    "lxmert": LxmertModel,
    "vilbert": ViLBertModel,
}
"""Model families by ``ModelConfig.arch``: an explicit dict, no registration side effects."""


class ExclusiveSourcesError(ValueError):
    """``bert_dir`` and ``init_from`` were both given (the trainer reports it as a ``ConfigError``)."""


class ArchitectureMismatchError(ValueError):
    """``init_from`` holds another model than ``preset`` plus overrides (the trainer reports it as a
    ``ConfigError``)."""


FROM_CHECKPOINT = "from_checkpoint"
"""``model.preset`` value that trains whatever architecture ``init_from`` holds (the explicit choice)."""

IDENTITY_FIELDS: tuple[str, ...] = (
    "arch", "embedding", "sab_modes", "sib", "alignment", "top_k", "sib_top_k", "switch_training",
    "num_layers", "hidden_size", "num_heads", "intermediate_size", "text_layers", "region_layers",
    "cross_layers", "region_hidden_size", "region_num_heads", "region_intermediate_size")
"""The fields that say which model trained: family, switches and size. A preset and the checkpoint it
starts from must agree on these. The rest (vocabulary, feature width, box format, VOLTA's quirks) is
what an imported checkpoint decides, and a weight that does not fit is reported tensor by tensor."""


def build_model(preset: str | ModelConfig, bert_dir: Optional[str | Path] = None, bert_truncate: bool = False, *,
                init_from: Optional[str | Path] = None, **overrides: Any) -> VLModel:
    """Builds a model: from a preset or a config, with random, BERT or checkpoint weights.

    Args:
        preset: a name in ``PRESETS`` (``switchbert models`` lists them) or a ``ModelConfig``.
        bert_dir: local HF BERT directory to initialise text embeddings and encoder layers from.
        bert_truncate: allow a deeper BERT than the model and use its first layers.
        init_from: the weights to start from: a run directory (its ``best/``, else ``last/``), a
            checkpoint, a model directory (these fix the architecture: ``preset`` must name the same
            model, :data:`IDENTITY_FIELDS`, or be ``FROM_CHECKPOINT``; ``overrides`` apply on top), or a
            state-dict file (``.safetensors``/``.pt``/``.bin``
            with this library's names, possibly under ``"model"`` / ``"model_state_dict"`` and with
            DataParallel's ``module.`` prefix) loaded into ``preset``'s architecture.
        overrides: config fields, e.g. ``sab_modes=("J",)``, ``sib=None``, ``top_k=2``.

    Returns:
        The model, in training mode; in eval mode when read from a directory (as ``load_pretrained``).

    Raises:
        ExclusiveSourcesError: both ``bert_dir`` and ``init_from``.
        ArchitectureMismatchError: ``init_from`` holds another model than ``preset``.
        ValueError: an unknown preset, arch or field; weights that do not fit, each tensor named.
    """
    if init_from is not None and bert_dir is not None:
        raise ExclusiveSourcesError(
            "model.bert_dir and model.init_from are exclusive: init_from already holds every encoder weight "
            "(set model.bert_dir=null, or model.init_from=null for 'no pretraining')")
    if init_from is not None:
        path = Path(init_from).expanduser()
        if not path.is_file():
            check_init_from(preset, path, **overrides)
            return load_pretrained(path, **overrides)
    if preset == FROM_CHECKPOINT:
        raise ValueError(f"model.preset={FROM_CHECKPOINT} needs model.init_from to be a run, checkpoint or "
                         f"model directory (got {init_from})")
    model = _new_model(preset, **overrides)
    if bert_dir is not None:
        init_from_bert(model, bert_dir, truncate=bert_truncate)
    if init_from is not None:
        _load_state_dict_file(model, path, preset)
    return model


def check_init_from(preset: str | ModelConfig, init_from: str | Path, **overrides: Any) -> ModelConfig:
    """The architecture a run starting from the directory ``init_from`` trains, checked against ``preset``.

    Args:
        preset: a preset name, a ``ModelConfig``, or ``FROM_CHECKPOINT`` (take the checkpoint's).
        init_from: a run, checkpoint or model directory.
        overrides: ``model.overrides``, applied to both sides (they are applied to the loaded config).

    Returns:
        The checkpoint's config with ``overrides``: the model that will train.

    Raises:
        ArchitectureMismatchError: the two differ in an :data:`IDENTITY_FIELDS` field; the message names
            both models, the fields, and the two ways out.
    """
    directory = resolve_checkpoint(init_from)
    got = read_config(directory)
    got = got.replace(**overrides) if overrides else got
    if isinstance(preset, str) and preset == FROM_CHECKPOINT:
        return got
    want = preset.replace(**overrides) if isinstance(preset, ModelConfig) else get_config(preset, **overrides)
    diffs = [f for f in IDENTITY_FIELDS if getattr(want, f) != getattr(got, f)]
    if diffs:
        def show(c: ModelConfig) -> str:
            return ", ".join(f"{f}={_plain(getattr(c, f))}" for f in diffs)

        raise ArchitectureMismatchError(
            f"model.init_from: {directory} holds a {got.name!r} model ({show(got)}) but model.preset is "
            f"{want.name!r} ({show(want)}); set model.preset={got.name} if that is the model to train "
            f"(or model.preset={FROM_CHECKPOINT} to train whatever init_from holds), or point "
            f"model.init_from at a {want.name!r} run")
    return got


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_pretrained(path: str | Path, map_location: str | torch.device = "cpu", **overrides: Any) -> VLModel:
    """Builds the model a model directory describes, loads its weights, returns it in eval mode.

    Eval mode (as HF's ``from_pretrained``): dropout off and hard, deterministic routes, so two calls on
    the same batch agree. Call ``model.train()`` to fine-tune.

    Args:
        path: a model directory (``save_pretrained``), a training checkpoint (``best/``, ``last/``) or a
            run directory (its ``best/``, else ``last/``).
        map_location: device for the weights.
        overrides: runtime config fields to change (e.g. ``attention_impl="reference"``); changing an
            architecture field makes the weights not fit, which is reported.

    Raises:
        FileNotFoundError: no model directory at or under ``path``.
        ValueError: a missing, unexpected or wrongly shaped tensor, each named.
    """
    directory = resolve_checkpoint(path)
    cls = model_class(read_config(directory).arch, where=str(Path(directory) / CONFIG_NAME))
    return cls.from_pretrained(directory, map_location, **overrides)


def save_pretrained(model: VLModel, directory: str | Path, training: Optional[TrainingInfo] = None) -> Path:
    """``model.save_pretrained(directory, training)``, as a function."""
    return model.save_pretrained(directory, training)


def model_class(arch: str, where: str = "ModelConfig") -> type[VLModel]:
    """The class that builds ``arch``; an unknown one is a ValueError saying where it came from."""
    try:
        return MODEL_CLASSES[arch]
    except KeyError:
        what = "ModelConfig.arch" if where == "ModelConfig" else f"{where}: arch"
        raise ValueError(f"{what}={arch!r} has no model class; known: {sorted(MODEL_CLASSES)}") from None


def _new_model(preset: str | ModelConfig, **overrides: Any) -> VLModel:
    """A freshly initialised model (training mode) of a preset or config, with ``overrides``."""
    if isinstance(preset, ModelConfig):
        config = preset.replace(**overrides) if overrides else preset
    else:
        config = get_config(preset, **overrides)
    return model_class(config.arch)(config)


def _load_state_dict_file(model: VLModel, path: Path, preset: str | ModelConfig) -> None:
    """Loads a state-dict file with our parameter names into ``model``, strictly."""
    state = read_state_dict(path)
    try:
        check_state_dict(model, state, source=str(path))
    except ValueError as e:
        name = preset.name if isinstance(preset, ModelConfig) else preset
        raise ValueError(f"{e}\nmodel.init_from must use this library's parameter names; convert a VOLTA or "
                         f"HF checkpoint first (switchbert import-checkpoint {path} DIR --from volta --preset "
                         f"{name}) and set model.init_from=DIR") from None
    model.load_state_dict(state, strict=True)
