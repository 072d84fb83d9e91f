"""Reading pickle-based input formats without running code from them.

Two formats we read are pickles by definition: the VOLTA/ViLBERT feature LMDB (its ``keys`` entry and
every record) and REFER's ``refs(unc).p``. A plain :func:`pickle.loads` executes whatever callable the
file names (``os.system``, ``subprocess.Popen``, ...), so a downloaded or copied data file could run
code. :func:`safe_loads` uses an unpickler that admits only what those formats contain:

* Python built-in values: None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict,
  set, frozenset (these need no global in the pickle stream);
* numpy arrays, dtypes and scalars, through exactly the globals numpy's own pickling emits:
  ``numpy.ndarray``, ``numpy.dtype``, ``multiarray._reconstruct`` and ``multiarray.scalar`` (module
  ``numpy.core`` in numpy 1.x, ``numpy._core`` in 2.x; both spellings map to the installed numpy, so
  files written under either load under either), and ``numeric._frombuffer`` (protocol 5);
* ``_codecs.encode(text, "latin1")``, which protocol-2 pickles written by Python 3 use for ``bytes``
  (only with a ``str`` and the latin-1 codec).

Any other global is refused with :class:`UnsafePickleError`, a :class:`DataError` naming the file, the
record and the global, before anything is called. ``torch_load_weights`` does the same for
``torch.load(weights_only=True)``: its refusal becomes one line instead of torch's advice to turn the
protection off.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from switchbert.data.errors import DataError, PathLike


class UnsafePickleError(DataError):
    """A pickle (or torch file) asked for a Python object outside what its format may contain."""

    def __reduce__(self):
        return (UnsafePickleError, (self.path, self.item, self.reason))


def _numpy_attr(submodule: str, name: str) -> Optional[Callable]:
    """``numpy._core.<submodule>.<name>`` (numpy 2) or ``numpy.core.<submodule>.<name>`` (numpy 1)."""
    import importlib

    for package in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{package}.{submodule}")
        except ImportError:
            continue
        value = getattr(module, name, None)
        if value is not None:
            return value
    return None


def _latin1_encode(obj: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what protocol-2 ``bytes`` pickles use."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("iso8859-1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {type(obj).__name__} and {encoding!r} is not allowed")
    return obj.encode("latin-1", errors)


def _allowed() -> dict[tuple[str, str], Any]:
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("codecs", "encode"): _latin1_encode,
    }
    for sub, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")):
        fn = _numpy_attr(sub, name)
        if fn is not None:
            for package in ("numpy.core", "numpy._core"):
                table[(f"{package}.{sub}", name)] = fn
    # Builtin containers and scalars referenced by name (protocol 0-2 writers emit some of these, e.g.
    # ``__builtin__.set`` from Python 2 or ``builtins.bytearray``); none of them runs code.
    for name, value in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray), ("complex", complex),
                        ("list", list), ("tuple", tuple), ("dict", dict), ("int", int), ("float", float),
                        ("str", str), ("bytes", bytes), ("bool", bool), ("long", int), ("unicode", str)):
        table[("builtins", name)] = table[("__builtin__", name)] = value
    return table


_ALLOWED: Optional[dict[tuple[str, str], Any]] = None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Optional[PathLike], item: object, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self._path, self._item = path, item

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed()
        value = _ALLOWED.get((module, name))
        if value is None:
            raise UnsafePickleError(
                self._path, self._item,
                f"refused to unpickle: it asks for the Python object {module}.{name}, which this format never "
                f"contains (only lists, dicts, strings, bytes, numbers and numpy arrays are admitted; a pickle "
                f"naming other objects can run code, so the file is not loaded)")
        return value

    def persistent_load(self, pid: object) -> Any:
        raise UnsafePickleError(self._path, self._item, "refused to unpickle: it uses persistent ids")


def safe_loads(data: bytes, path: Optional[PathLike] = None, item: object = None, encoding: str = "ASCII") -> Any:
    """Unpickles ``data`` admitting only built-in values and numpy arrays/dtypes/scalars.

    Args:
        data: the pickle bytes.
        path, item: named in errors (the file and the record in it).
        encoding: how Python 2 ``str`` objects are decoded (as in :func:`pickle.loads`).

    Raises:
        UnsafePickleError: the pickle names anything else (nothing from it was called).
        DataError: the bytes are not a valid pickle.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path, item, encoding=encoding).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt record
        what = "corrupt pickle" if item is None else "corrupt record"
        raise DataError(path, item, f"{what}: cannot unpickle ({type(exc).__name__}: {exc})") from exc


def safe_load_file(path: PathLike, encoding: str = "ASCII") -> Any:
    """:func:`safe_loads` of a whole file; a missing file or a directory is a :class:`DataError`."""
    p = Path(path)
    if p.is_dir():
        raise DataError(p, None, "is a directory, expected a pickle file")
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(p, None, "file not found") from exc
    except OSError as exc:
        raise DataError(p, None, f"cannot read: {exc.strerror or exc}") from exc
    return safe_loads(data, p, None, encoding=encoding)


def torch_load_weights(path: PathLike, **kwargs) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a refusal is one-line UnsafePickleError.

    torch's own refusal is a multi-line ``UnpicklingError`` suggesting ``weights_only=False``, which
    would run the file's code; we keep only the line that says what was refused.
    """
    import torch

    kwargs.setdefault("map_location", "cpu")
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln), None)
        why = why or (lines[-1] if lines else "not a plain tensor file")
        raise UnsafePickleError(path, None, f"refused to load (weights-only torch.load): {why.rstrip('.')}; "
                                            f"the file holds Python objects besides tensors, which could run "
                                            f"code, so it is not loaded") from None
