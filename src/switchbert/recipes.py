"""The experiment recipes shipped inside the package (``switchbert/configs/<group>/<name>.yaml``).

A non-editable install has no repository checkout, so the controlled-setting recipes travel as package
data. Commands accept a recipe by name (``vqa/uniter``), by its repository path
(``configs/vqa/uniter.yaml``, which also works from any directory), or as any YAML file of your own.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path
from typing import Union

RECIPES_DIR = Path(__file__).resolve().parent / "configs"


def recipe_names() -> list[str]:
    """Every packaged recipe as ``group/name`` (``vqa/uniter``), sorted."""
    return sorted(p.relative_to(RECIPES_DIR).with_suffix("").as_posix() for p in RECIPES_DIR.glob("*/*.yaml"))


def _recipe_name(spec: str) -> str:
    name = spec.replace("\\", "/")
    name = name[len("configs/"):] if name.startswith("configs/") else name
    return name[:-len(".yaml")] if name.endswith(".yaml") else name


def recipe_path(name: str) -> Path:
    """The packaged file of recipe ``name``; a ``FileNotFoundError`` with suggestions when there is none."""
    key = _recipe_name(name)
    path = RECIPES_DIR / f"{key}.yaml"
    if path.is_file():
        return path
    close = difflib.get_close_matches(key, recipe_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `switchbert configs` lists them"
    raise FileNotFoundError(f"no packaged recipe {name!r}{hint}")


def resolve_config(spec: Union[str, Path]) -> Path:
    """A config argument as a file: an existing path as given, else the packaged recipe it names.

    Raises:
        FileNotFoundError: neither a file nor a packaged recipe (with the closest recipe names).
    """
    path = Path(spec)
    if path.exists():
        return path
    try:
        return recipe_path(str(spec))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config file not found: {spec} (and {e})") from None


def copy_recipe(name: str, dest: Union[str, Path], force: bool = False) -> Path:
    """Copies recipe ``name`` to ``dest`` (a file, or a directory to put ``<name>.yaml`` in)."""
    src = recipe_path(name)
    is_dir = Path(dest).is_dir() or str(dest).endswith(("/", "\\"))
    dest = Path(dest) / src.name if is_dir else Path(dest)
    if dest.exists() and not force:
        raise ValueError(f"{dest} exists; pass --force to overwrite it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return dest
