"""Training checkpoints, written atomically as whole directories.

    OUTPUT_DIR/last/   and   OUTPUT_DIR/best/
        config.json, model.safetensors   the model (``save_pretrained``: ``load_pretrained(dir)`` reads it)
        heads.safetensors                the task's heads (the tied MLM decoder matrix lives in the model)
        trainer_state.pt                 optimizer, scheduler, step, epoch, position in the epoch,
                                         RNG states (python, numpy, torch, CUDA), best metric so far,
                                         the resolved experiment config
        answer_vocab.json                VQA only: the classifier's answers
        .complete                        written last: the directory is whole

``trainer_state.pt`` holds only tensors, numbers, strings, lists, tuples and dicts (the numpy RNG
state is stored as a tensor), so it is read with ``torch.load(weights_only=True)``: a crafted file
from a copied run directory cannot run code, it is refused with one line naming it.

A directory is written under a temporary name (``.tmp-<name>-*``), marked complete, and renamed into
place; the previous one is kept (``.old-<name>``) until the new one is in place. ``recover_dir``
(run at the start of every training run) repairs every state a kill can leave: a complete temporary
copy wins (it is the newest), else ``.old-<name>`` is put back, and incomplete leftovers are removed.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from switchbert.io import atomic_write
# The model directory (its files, the heads file, resolving a run to its checkpoint) lives in models/;
# these names stay importable from here.
from switchbert.models.build import save_pretrained
from switchbert.models.directory import (COMPLETE_NAME, CONFIG_NAME, HEADS_NAME, WEIGHTS_NAME, TrainingInfo,
                                         is_complete, load_heads, resolve_checkpoint, write_heads)

STATE_NAME = "trainer_state.pt"
PROVENANCE_NAME = "provenance.json"


@dataclass
class TrainerState:
    """Where training stands.

    Attributes:
        step: optimizer steps taken in this stage.
        epoch: the current epoch (0-based).
        step_in_epoch: optimizer steps taken in ``epoch`` (a resumed run skips their batches).
        total_steps: the stage's length (fixes the LR and temperature schedules).
        best_value: best validation value of ``best_metric`` so far, or None.
        best_step: the step it was reached at.
        best_metric: its name.
        global_batch: samples per step; a resume with another batch would not be exact.
    """

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    total_steps: int = 0
    best_value: Optional[float] = None
    best_step: Optional[int] = None
    best_metric: str = ""
    global_batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # validation results per epoch


def rng_states() -> dict[str, Any]:
    """Every global random state a training step draws from (dropout, Gumbel noise, shuffling).

    Only weights-only-loadable types: numpy's (name, keys, pos, has_gauss, cached) keeps its keys as an
    int64 tensor instead of an array.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(),
              "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                        float(cached)),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def write_dir_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """Calls ``write(tmp_dir)`` then swaps ``tmp_dir`` into ``final``; the old copy goes last."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    old = final.parent / f".old-{final.name}"
    try:
        write(tmp)
        _apply_umask(tmp)
        _fsync_dir(tmp)
        (tmp / COMPLETE_NAME).write_text("")  # from here on recover_dir prefers tmp to anything else
        _fsync_dir(tmp)
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover_dir(final: Path) -> list[str]:
    """Repairs ``final`` after a kill at any point of ``write_dir_atomically``; returns what it did.

    States a kill can leave, and the repair (the newest complete copy always wins):
        - ``.tmp-<name>-*`` incomplete (killed while writing): removed; ``final`` (if any) stays.
        - ``.tmp-<name>-*`` complete, ``final`` missing (killed between the two renames, or before the
          first rename of a first write): the temporary copy becomes ``final``.
        - ``.tmp-<name>-*`` complete, ``final`` present (killed before the renames): the temporary
          copy is newer and complete, so it replaces ``final``.
        - ``.old-<name>`` and no ``final`` and no complete temporary: ``.old-<name>`` goes back.
        - ``.old-<name>`` beside ``final`` (killed before or while removing it): removed.
    Call it only while holding the run lock (``RunLock``): a running writer's files look the same.
    """
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return []
    actions: list[str] = []
    old = parent / f".old-{final.name}"
    tmps = sorted(parent.glob(f".tmp-{final.name}-*"), key=lambda p: p.stat().st_mtime)
    complete = [t for t in tmps if t.is_dir() and is_complete(t)]
    newest = complete[-1] if complete else None
    if newest is not None:
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(newest, final)
        actions.append(f"{final}: restored the complete copy {newest.name} (a write was interrupted)")
    elif not final.exists() and old.is_dir():
        os.replace(old, final)
        actions.append(f"{final}: restored {old.name} (a write was interrupted between its two renames)")
    for t in tmps:
        if t.exists() and t != newest:
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink()
            actions.append(f"{final.parent}: removed the unfinished write {t.name}")
    if old.exists() and final.exists():
        shutil.rmtree(old, ignore_errors=True)
    if actions:
        _fsync_dir(parent)
    return actions


def _apply_umask(directory: Path) -> None:
    # mkdtemp/mkstemp create private (0700/0600) entries; give the checkpoint the usual permissions.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.iterdir():
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~umask)


LICENSE_LINE = ("license: the code is Apache-2.0 (switchbert); these weights derive from the training data "
                "and from any weights they started from, whose licenses also apply")
INTENDED_USE_LINE = ("intended use: research on vision-and-language models, on the task above; not evaluated "
                     "for deployment, fairness or safety")


def _training_info(config: Optional[dict[str, Any]], state: TrainerState,
                   provenance: Optional[dict[str, Any]] = None) -> Optional[TrainingInfo]:
    """What the checkpoint's model card says about its training (the run's config, position, results,
    provenance, license and intended use)."""
    if config is None:
        return None
    from switchbert.train.provenance import card_lines

    model = config.get("model", {})
    train = config.get("train", {})
    # At the end of an epoch the state already points at the next one (step_in_epoch 0).
    done = (f"{state.epoch} epoch{'s' if state.epoch != 1 else ''} completed" if state.step_in_epoch == 0
            else f"stopped {state.step_in_epoch} steps into epoch {state.epoch + 1}")
    extra = [f"of {state.total_steps:,} planned steps; {done}"]
    if model.get("init_from"):
        extra.append(f"initialised from: {model['init_from']}")
    elif model.get("bert_dir"):
        extra.append(f"initialised from BERT: {model['bert_dir']}")
    else:
        extra.append("initialised: randomly (no BERT, no init_from)")
    extra.append(f"recipe: seed {train.get('seed')}, learning rate {train.get('lr')}, global batch "
                 f"{train.get('batch_size')}, epochs planned: {train.get('epochs')}")
    if state.best_value is not None:
        extra.append(f"best {state.best_metric} = {state.best_value:.4f} at step {state.best_step}")
    if state.history:
        last = {k: v for k, v in state.history[-1].items() if k not in ("epoch", "step")}
        if last:
            extra.append(f"latest validation (step {state.history[-1].get('step')}): "
                         + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in last.items()))
    if provenance is not None:
        extra += card_lines(provenance)
    extra += [LICENSE_LINE, INTENDED_USE_LINE]
    return TrainingInfo(task=str(config.get("task", "")), data=str(config.get("data", {}).get("root", "")),
                        steps=state.step, epochs=float(state.epoch) if state.step_in_epoch == 0 else None,
                        extra=tuple(extra))


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    heads: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainerState,
    rng: Optional[list[dict[str, Any]]] = None,
    assets: Optional[Callable[[Path], None]] = None,
    config: Optional[dict[str, Any]] = None,
) -> Path:
    """Writes a full training checkpoint to ``directory`` atomically (see the module docstring).

    Args:
        rng: the RNG states of every process, in rank order (default: this process's alone).
        config: the run's resolved experiment (``ExperimentConfig.to_dict()``), which ``--resume``
            compares with the new one.
    """
    from switchbert.train.provenance import provenance as run_provenance

    rng = rng if rng is not None else [rng_states()]
    writing = [WEIGHTS_NAME]  # the file being written, for the error
    origin = run_provenance(config) if config is not None else None

    def write(tmp: Path) -> None:
        save_pretrained(model, tmp, training=_training_info(config, state, origin))
        if origin is not None:
            writing[0] = PROVENANCE_NAME
            atomic_write(tmp / PROVENANCE_NAME, lambda p: Path(p).write_text(json.dumps(origin, indent=2) + "\n"))
            writing[0] = WEIGHTS_NAME
        writing[0] = HEADS_NAME
        write_heads(heads, tmp)
        payload = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "state": asdict(state), "rng": rng, "config": config}
        writing[0] = STATE_NAME
        atomic_write(tmp / STATE_NAME, lambda p: torch.save(payload, p))
        writing[0] = "the task's assets"
        if assets is not None:
            assets(tmp)

    directory = Path(directory)
    had = has_weights(directory)
    try:
        written = write_dir_atomically(directory, write)
        if origin is not None:  # the run's too: the latest checkpoint's
            atomic_write(directory.parent / PROVENANCE_NAME,
                         lambda p: Path(p).write_text(json.dumps(origin, indent=2) + "\n"))
        return written
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # OSError, safetensors' and torch's writer errors: none names our file
        raise CheckpointWriteError(directory, writing[0], e, had) from None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a file size limit, permissions). The message is one
    line: the checkpoint, the file, the reason, and that the previous checkpoint there is intact."""

    def __init__(self, directory: Path, file: str, cause: BaseException, had_previous: bool) -> None:
        reason = _write_reason(cause)
        try:
            free = f"; {shutil.disk_usage(directory.parent).free / 2**20:,.0f} MiB free there"
        except OSError:
            free = ""
        kept = (f"{directory} is intact (the previous checkpoint)" if had_previous
                else f"no earlier checkpoint was in {directory}")
        super().__init__(f"{directory}: could not write the checkpoint ({file}: {reason}{free}); {kept}")


def _write_reason(e: BaseException) -> str:
    """What went wrong, in words: torch's and safetensors' writer errors carry the OS error inside."""
    text = str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    for needle, words in (("File too large", "file too large (a file size limit)"),
                          ("No space left", "no space left on the device"),
                          ("Disk quota", "disk quota exceeded"), ("Permission denied", "permission denied"),
                          ("file write failed", "the write failed (disk full or a file size limit?)")):
        if needle in text:
            return words
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first[:160]}"


def load_trainer_state(directory: Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` payload (optimizer, scheduler, state dict, RNG states)."""
    path = Path(directory) / STATE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trainer state to resume from")
    # A run directory may come from elsewhere: the weights-only unpickler builds tensors and plain
    # containers only, which is all save_checkpoint writes, and refuses anything that would run code.
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError) as e:
        raise ValueError(f"{path}: refused: not a trainer state this library wrote (it holds something other "
                         f"than tensors, numbers, strings and containers, or is damaged: {_refusal(e)})") from None
    if not isinstance(payload, dict) or not {"optimizer", "scheduler", "state", "rng"} <= set(payload):
        raise ValueError(f"{path}: not a trainer state (expected optimizer, scheduler, state and rng entries)")
    return payload


def _refusal(e: BaseException) -> str:
    """The line of torch's weights-only refusal that says what was refused (``Unsupported global: GLOBAL
    os.system``), without torch's advice to load with ``weights_only=False``, which would run the code."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    why = next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), None)
    if why is None:
        why = next((ln for ln in lines if "weights_only" not in ln and "Weights only" not in ln), type(e).__name__)
    why = why.replace("WeightsUnpickler error: ", "").split(". Please")[0]
    return why[:200].rstrip(".")


def has_weights(directory: Path) -> bool:
    return (Path(directory) / WEIGHTS_NAME).is_file()
