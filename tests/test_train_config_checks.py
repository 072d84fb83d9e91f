"""The experiment config's checks (train/config.py): every number finite and in range; wrong kinds of
paths stop the command before any work, with one line naming the key and the path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from switchbert.commands.train import finetune_main, pretrain_main
from switchbert.train.config import ConfigError, load_config
from switchbert.train.preflight import check_paths
from tests.test_train_support import make_synth, synth_config


@pytest.mark.parametrize("override, message", [
    ("train.lr=.nan", "train.lr must be a finite number, got nan"),
    ("train.lr=.inf", "train.lr must be a finite number, got inf"),
    ("train.lr=inf", "train.lr must be a finite number, got inf"),  # the string form YAML leaves as text
    ("train.eps=.inf", "train.eps must be a finite number, got inf"),
    ("train.eps=nan", "train.eps must be a finite number, got nan"),
    ("train.weight_decay=.nan", "train.weight_decay must be a finite number, got nan"),
    ("train.weight_decay=.inf", "train.weight_decay must be a finite number, got inf"),
    ("train.loss_weights=[1, .nan, 1]", "train.loss_weights[1] must be a finite number, got nan"),
    ("train.loss_weights=[1, 1, .inf]", "train.loss_weights[2] must be a finite number, got inf"),
    ("train.loss_weights=[0, 0, 0]", "train.loss_weights must be non-negative and not all 0"),
    ("train.clip=.inf", "train.clip must be a finite number"),
    ("train.tau_max=.inf", "train.tau_max must be a finite number"),
    ("train.betas=[.nan, 0.9]", "train.betas[0] must be a finite number"),
    ("data.fraction=.nan", "data.fraction must be a finite number"),
    ("train.seed=-1", "train.seed must be >= 0"),
    ("model.overrides.hidden_dropout=.nan", "model.overrides.hidden_dropout must be a finite number"),
    ("model.overrides.layer_norm_eps=.inf", "model.overrides.layer_norm_eps must be a finite number"),
    ("model.overrides.initializer_range=-0.02", "ModelConfig.initializer_range: must be a finite number > 0"),
    ("model.overrides.layer_norm_eps=0", "ModelConfig.layer_norm_eps: must be a finite number > 0"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(synth_config("pretrain"), [override])
    assert message in str(err.value) and "pretrain.yaml" in str(err.value)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def test_directory_where_a_file_is_expected(synth, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth, root, symlinks=True)
    captions = root / "cc" / "caption_train.json"
    captions.unlink()
    captions.mkdir()
    config = load_config(synth_config("pretrain"), [f"data.root={root}", "model.init_from=null"])
    with pytest.raises(ConfigError, match=r"data.cc_train: .*caption_train.json is a directory, expected a file"):
        check_paths(config, "pretrain.yaml")
    with pytest.raises(ConfigError, match="is a directory, expected a config YAML file"):
        load_config(tmp_path)


def test_directory_as_a_json_file_in_the_loader(tmp_path):
    from switchbert.data.errors import DataError, load_json

    with pytest.raises(DataError, match="is a directory, expected a JSON file"):
        load_json(tmp_path)
    (tmp_path / "b.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        load_json(tmp_path / "b.json")


@pytest.mark.parametrize("main, task", [(pretrain_main, "pretrain"), (finetune_main, "vqa")])
def test_output_dir_that_is_a_file_stops_before_the_model_is_built(synth, tmp_path, capsys, monkeypatch, main, task):
    import switchbert.train.trainer as trainer

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(trainer, "initial_model", no_model)
    out = tmp_path / "run"
    out.write_text("not a directory")
    rc = main([synth_config(task), f"data.root={synth}", f"output_dir={out}", "model.init_from=null"])
    err = capsys.readouterr().err
    assert rc == 2 and f"output_dir: {out} exists and is not a directory" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
