"""Initialising a model from a local HF-format BERT directory (no network, ever).

The directory holds ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``. Keys may carry
a ``bert.`` prefix and old LayerNorm names (``gamma``/``beta``). Each model class declares an explicit
key map (ours -> BERT's, ``VLModel.bert_key_map``); every mapped tensor's shape is checked, and the
report lists what BERT offered that was unused and which of our parameters stayed random.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from switchbert.weights.state_dict import read_config_json, read_state_dict
from switchbert.models.base import VLModel

log = logging.getLogger(__name__)


@dataclass
class InitReport:
    """What BERT initialisation did.

    Attributes:
        loaded: our parameter names that received BERT weights.
        unused: BERT tensor names not used (e.g. its tanh pooler, MLM head, position_ids).
        uninitialised: our parameter names left at their random initialisation.
    """

    loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    uninitialised: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"BERT init: {len(self.loaded)} tensors loaded"]
        lines.append(f"  unused BERT tensors ({len(self.unused)}): {', '.join(self.unused) or '-'}")
        groups = sorted({k.rsplit('.', 1)[0] for k in self.uninitialised})
        lines.append(f"  left random ({len(self.uninitialised)} tensors in {len(groups)} modules): "
                     f"{', '.join(groups) or '-'}")
        return "\n".join(lines)


def _normalise_key(key: str) -> str:
    if key.startswith("bert."):
        key = key[len("bert."):]
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    return key


def read_bert_checkpoint(bert_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Reads a BERT directory.

    Returns:
        (config dict, state dict with normalised keys: no ``bert.`` prefix, weight/bias names).
    """
    bert_dir = Path(bert_dir)
    if not bert_dir.is_dir():
        raise FileNotFoundError(f"bert_dir {bert_dir} is not a directory (a local HF BERT directory is needed)")
    config = read_config_json(bert_dir, "a BERT directory")
    raw = read_state_dict(bert_dir)
    state: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        nk = _normalise_key(k)
        if nk in state:
            raise ValueError(f"{bert_dir}: tensors {k!r} and another key both map to {nk!r}")
        state[nk] = v
    return config, state


def check_bert_config(model: VLModel, bert_config: dict, bert_dir: str | Path, truncate: bool = False) -> None:
    """Raises ``ValueError`` when the BERT's width, heads, FFN or depth do not fit the model.

    A deeper BERT than the model needs is an error unless ``truncate`` (then its first layers are
    used, as for the paper's 6-layer ablation).
    """
    c = model.config
    problems = []
    for ours, theirs in (("hidden_size", "hidden_size"), ("num_heads", "num_attention_heads"),
                         ("intermediate_size", "intermediate_size"), ("vocab_size", "vocab_size")):
        if theirs in bert_config and bert_config[theirs] != getattr(c, ours):
            problems.append(f"{theirs}={bert_config[theirs]} but preset {c.name!r} has {ours}={getattr(c, ours)}")
    needed = model.bert_layers_needed() if hasattr(model, "bert_layers_needed") else c.num_layers
    depth = bert_config.get("num_hidden_layers")
    if depth is not None and depth < needed:
        problems.append(f"num_hidden_layers={depth} but preset {c.name!r} needs {needed} BERT layers")
    if depth is not None and depth > needed and not truncate:
        problems.append(f"num_hidden_layers={depth} but preset {c.name!r} uses {needed} BERT layers "
                        f"(pass bert_truncate=True to take BERT's first {needed} layers)")
    if problems:
        raise ValueError(f"{bert_dir}/config.json does not match the model: " + "; ".join(problems))


@torch.no_grad()
def init_from_bert(model: VLModel, bert_dir: str | Path, truncate: bool = False) -> InitReport:
    """Copies BERT weights into ``model`` in place following its key map.

    Args:
        model: any model of the library; its ``bert_key_map`` says where each BERT tensor goes.
        bert_dir: a local HF BERT directory.
        truncate: allow a deeper BERT and use its first layers.

    Raises:
        ValueError: a size or depth mismatch, a mapped tensor missing from the file, or a shape
            mismatch, each naming the key.
    """
    bert_config, state = read_bert_checkpoint(bert_dir)
    check_bert_config(model, bert_config, bert_dir, truncate)
    depth = bert_config.get("num_hidden_layers", model.config.num_layers)
    key_map = model.bert_key_map(depth)
    params = dict(model.named_parameters())
    report = InitReport()
    used: set[str] = set()
    for ours, theirs in key_map.items():
        if ours not in params:
            raise KeyError(f"key map names {ours!r}, which {type(model).__name__} does not have")
        if theirs not in state:
            raise ValueError(f"{bert_dir}: BERT tensor {theirs!r} (for {ours}) is missing")
        src = state[theirs]
        dst = params[ours]
        if dst.shape == src.shape:
            dst.copy_(src.to(dst.dtype))
        elif ours.endswith("position_embeddings.weight") and src.shape[1:] == dst.shape[1:] and src.shape[0] >= dst.shape[0]:
            dst.copy_(src[: dst.shape[0]].to(dst.dtype))  # fewer positions than BERT: keep the first ones
        else:
            raise ValueError(f"{bert_dir}: {theirs} has shape {tuple(src.shape)}, {ours} needs {tuple(dst.shape)}")
        used.add(theirs)
        report.loaded.append(ours)
    report.unused = sorted(set(state) - used)
    report.uninitialised = sorted(set(params) - set(key_map))
    log.info(report.summary())
    return report
