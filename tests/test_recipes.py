"""The experiment recipes ship inside the package and commands accept them by name."""

from pathlib import Path

import pytest
import yaml

import switchbert
from switchbert.cli import main
from switchbert.recipes import RECIPES_DIR, copy_recipe, recipe_names, resolve_config
from switchbert.train.config import ConfigError, load_config


def test_recipes_live_inside_the_package_and_are_package_data():
    assert RECIPES_DIR.parent == Path(switchbert.__file__).resolve().parent
    names = recipe_names()
    for group in ("pretrain", "vqa", "retrieval", "refexp"):
        for model in ("switchbert", "uniter", "visualbert", "vlbert", "lxmert", "vilbert"):
            assert f"{group}/{model}" in names
    assert {"synth/pretrain", "synth/vqa", "synth/retrieval", "synth/refexp"} <= set(names)
    # a non-editable install only carries what package-data names
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"configs/*/*.yaml"' in pyproject


def test_a_config_argument_may_name_a_packaged_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: the package's copy is used
    for spec in ("vqa/uniter", "vqa/uniter.yaml", "configs/vqa/uniter.yaml"):
        assert resolve_config(spec) == RECIPES_DIR / "vqa" / "uniter.yaml"
        assert load_config(spec).model.preset == "uniter-base"
    own = tmp_path / "vqa" / "uniter.yaml"  # a file of the user's wins over the recipe of that name
    own.parent.mkdir()
    own.write_text((RECIPES_DIR / "synth" / "vqa.yaml").read_text())
    assert resolve_config("vqa/uniter.yaml") == Path("vqa/uniter.yaml")
    with pytest.raises(ConfigError, match="did you mean vqa/uniter"):
        load_config("vqa/unitr")


def test_configs_command_lists_shows_and_copies(tmp_path, capsys):
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    assert "vqa/" in out and "lxmert" in out and f"{len(recipe_names())} recipes" in out
    assert main(["configs", "show", "synth/vqa"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["task"] == "vqa"
    assert main(["configs", "cp", "refexp/vilbert", str(tmp_path / "mine") + "/"]) == 0
    copied = tmp_path / "mine" / "vilbert.yaml"
    assert copied.read_text() == (RECIPES_DIR / "refexp" / "vilbert.yaml").read_text()
    assert main(["configs", "cp", "refexp/vilbert", str(copied)]) == 2  # no silent overwrite
    assert "--force" in capsys.readouterr().err
    assert copy_recipe("refexp/vilbert", copied, force=True) == copied
