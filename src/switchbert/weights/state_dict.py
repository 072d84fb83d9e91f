"""What every checkpoint importer shares: reading files, copying by an explicit key map, the report.

A key map says, for each of our parameters, which tensor of the other checkpoint it takes (optionally
a slice of it). Aliases are keys a checkpoint stores twice (VOLTA's ``v_`` names of a shared
sub-layer, the tied MLM decoder); each must equal its canonical tensor and is then consumed once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from safetensors.torch import load_file
from torch import Tensor, nn


@dataclass(frozen=True)
class Src:
    """A source tensor: ``key`` in the checkpoint, with ``take`` applied (e.g. one row), ``why`` for the report."""

    key: str
    take: Optional[Callable[[Tensor], Tensor]] = None
    why: str = ""


KeyMap = dict[str, Union[str, Src]]


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        source: the file or directory read.
        loaded: our parameter names that received a tensor.
        aliases: "alias = canonical" for every duplicate key found equal and consumed once.
        unused: checkpoint keys no parameter took (heads, task classifiers, HF's tanh pooler, ...).
        uninitialised: our parameter names left at their random initialisation, with the key expected.
        notes: how the importer mapped what differs between the layouts.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    uninitialised: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"import from {self.source}: {len(self.loaded)} parameters loaded, "
                 f"{len(self.aliases)} duplicate keys deduplicated"]
        for a in self.aliases:
            lines.append(f"  alias      {a}")
        lines.append(f"  unused checkpoint keys ({len(self.unused)}):" + ("" if self.unused else " none"))
        lines += [f"    {k}" for k in self.unused]
        lines.append(f"  parameters NOT initialised ({len(self.uninitialised)}):" + ("" if self.uninitialised else " none"))
        lines += [f"    {k}" for k in self.uninitialised]
        if self.notes:
            lines.append("  notes:")
            lines += [f"    - {n}" for n in self.notes]
        return "\n".join(lines)


def read_config_json(directory: str | Path, what: str = "an HF model directory") -> dict:
    """``directory/config.json`` as a dict; a missing or malformed file is an error naming it."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {what} needs config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A plain state dict from a ``.safetensors`` / ``.bin`` / ``.pt`` file, or a directory holding
    ``model.safetensors`` or ``pytorch_model.bin``. A training checkpoint's ``model_state_dict`` or
    ``model`` entry and DataParallel's ``module.`` prefix are unwrapped.

    This is the one reader of weight files: BERT directories, VOLTA and HF checkpoints and
    ``build_model(init_from=FILE)`` all come through it."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        raw = load_file(str(path))
    else:
        from switchbert.data.safe_pickle import torch_load_weights

        raw = torch_load_weights(path)  # a refused file is one line naming it, not torch's advice
    for wrapper in ("model_state_dict", "model"):  # {"model": ...} is what many training scripts save
        if isinstance(raw, dict) and isinstance(raw.get(wrapper), dict):
            raw = raw[wrapper]
            break
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in raw.items()}


@torch.no_grad()
def apply_key_map(
    module: nn.Module,
    state: dict[str, Tensor],
    key_map: KeyMap,
    aliases: dict[str, str],
    report: ImportReport,
    prefix: str = "",
) -> set[str]:
    """Copies ``state`` tensors into ``module``'s parameters following ``key_map``; fills ``report``.

    Args:
        module: the model (or heads) to fill, in place.
        state: the checkpoint's tensors.
        key_map: our parameter name -> checkpoint key (or ``Src``).
        aliases: duplicate key -> canonical key; present pairs must be equal.
        report: appended to (so the encoder and the heads can share one report); the caller sets
            ``report.unused`` from the keys returned by every call.
        prefix: put before our names in the report (e.g. "heads.").

    Returns:
        The checkpoint keys consumed (loaded or deduplicated).

    Raises:
        ValueError: an alias that differs from its canonical tensor, or a shape mismatch, naming both keys.
    """
    params = dict(module.named_parameters())
    for ours in key_map:
        if ours not in params:
            raise KeyError(f"key map names {ours!r}, which {type(module).__name__} does not have")
    for alias, canonical in aliases.items():
        if alias in state and canonical in state:
            a, c = state[alias], state[canonical]
            if a.shape != c.shape or not torch.equal(a, c):
                raise ValueError(f"{report.source}: {alias} should be the same tensor as {canonical} "
                                 f"(a shared or tied weight) but differs")
            report.aliases.append(f"{alias} = {canonical}")
    used = {a for a, c in aliases.items() if a in state and c in state}
    for ours, src in key_map.items():
        s = Src(src) if isinstance(src, str) else src
        if s.key not in state:
            report.uninitialised.append(f"{prefix}{ours}  (expected {s.key})")
            continue
        value = state[s.key] if s.take is None else s.take(state[s.key])
        dst = params[ours]
        if tuple(value.shape) != tuple(dst.shape):
            raise ValueError(f"{report.source}: {s.key} has shape {tuple(value.shape)}, "
                             f"{prefix}{ours} needs {tuple(dst.shape)}; does --preset match the checkpoint?")
        dst.copy_(value.to(dst.dtype))
        used.add(s.key)
        report.loaded.append(prefix + ours)
    report.uninitialised += [f"{prefix}{k}  (no source in this layout)" for k in sorted(set(params) - set(key_map))]
    return used
