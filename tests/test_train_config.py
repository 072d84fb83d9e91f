"""The experiment config: every shipped file loads with docs/method.md recipe; bad input stops with a message
naming the file and the key, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchbert.presets import PRESETS
from switchbert.commands.train import finetune_main, pretrain_main
from switchbert.train.preflight import check_paths
from switchbert.train.config import (ConfigError, ExperimentConfig, from_dict, load_config,
                                     parse_override, save_config)
from switchbert.train.config import NOT_RECIPE, TASKS, DataSection
from switchbert.train.tasks import data_keys, task_class
from tests.test_train_support import CONFIGS, make_synth, synth_config

ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))
MODELS = ("switchbert", "uniter", "visualbert", "vlbert", "lxmert", "vilbert")
TASK_RECIPES = {  # docs/method.md §7: lr, global batch, text length
    "vqa": (1e-4, 256, 23),
    "retrieval": (2e-5, 64, 30),
    "refexp": (1e-4, 256, 20),
}


def test_the_shipped_configs_cover_every_model_and_task():
    names = {p.relative_to(CONFIGS).as_posix() for p in ALL_CONFIGS}
    for stage in ("pretrain", *TASK_RECIPES):
        for model in MODELS:
            assert f"{stage}/{model}.yaml" in names
    assert {f"synth/{t}.yaml" for t in ("pretrain", "vqa", "retrieval", "refexp")} <= names


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_config_loads(path):
    config = load_config(path)
    assert config.model.preset in PRESETS
    stage, name = path.parent.name, path.stem
    if stage == "synth":
        assert config.task == name and config.model.preset == "switchbert-tiny"
        return
    assert config.model.preset == f"{name}-base"
    t, d = config.train, config.data
    assert (t.eps, t.warmup, t.betas, t.tau_max, t.tau_min) == (1e-6, 0.1, (0.9, 0.999), 5.0, 0.1)
    if stage == "pretrain":  # docs/method.md §6
        assert config.task == "pretrain"
        assert (t.epochs, t.batch_size, t.lr, t.weight_decay, t.clip, d.max_text_len) == (10, 256, 1e-4, 0.01, 5.0, 38)
        assert config.model.bert_dir is not None and config.model.init_from is None
    else:  # docs/method.md §7
        assert config.task == stage
        assert (t.epochs, t.weight_decay, t.clip) == (20, 1e-4, 1.0)
        assert (t.lr, t.batch_size, d.max_text_len) == TASK_RECIPES[stage]
        assert config.model.init_from == f"runs/pretrain/{name}"


def test_synthetic_configs_point_at_the_synthetic_layout(tmp_path):
    synth = make_synth(tmp_path / "synth")
    for task in ("pretrain", "vqa", "retrieval", "refexp"):
        config = load_config(synth_config(task), [f"data.root={synth}", "model.init_from=null"])
        check_paths(config, task)  # raises if a path key does not match the synthetic files


def test_each_task_declares_what_check_paths_requires(tmp_path):
    """check_paths asks the task (switchbert/train/tasks/): a missing file stops the check exactly when
    the task declares it required or optional, and an unset one exactly when it is required."""
    import copy

    synth = make_synth(tmp_path / "synth")
    for task in TASKS:
        cls = task_class(task)
        base = load_config(synth_config(task), [f"data.root={synth}", "model.init_from=null"])
        for key in data_keys():
            config = copy.deepcopy(base)
            setattr(config.data, key, "no/such/file")
            if key in cls.required_files + cls.optional_files:
                with pytest.raises(ConfigError, match=f"data.{key}: .* does not exist"):
                    check_paths(config, task)
            else:
                check_paths(config, task)  # a key the task does not check
            setattr(config.data, key, None)
            if key in cls.required_files:
                with pytest.raises(ConfigError, match=f"data.{key} is required for task '{task}'"):
                    check_paths(config, task)
            else:
                check_paths(config, task)
        # Evaluation reads the answer vocabulary from the checkpoint: no training file is required.
        config = copy.deepcopy(base)
        for key in cls.required_files:
            if "train" in key:
                setattr(config.data, key, None)
        check_paths(config, task, need_train=False)


def test_the_tasks_declare_every_path_key_once_and_none_enters_the_recipe():
    import typing

    hints = typing.get_type_hints(DataSection)
    paths = {k for k, tp in hints.items() if tp == typing.Optional[str]} | {"features"}
    assert sorted(data_keys()) == sorted(paths)
    # features is every task's; every other path key belongs to one task
    owners = {k: [t for t in TASKS if k in task_class(t).data_keys()] for k in data_keys()}
    assert owners.pop("features") == list(TASKS)
    assert all(len(v) == 1 for v in owners.values()), owners
    assert {f"data.{k}" for k in data_keys()} <= NOT_RECIPE


def test_the_recipes_text_length_is_the_tasks():
    for stage, (_, _, text_len) in TASK_RECIPES.items():
        assert task_class(stage).text_len == text_len
    assert task_class("pretrain").text_len == 38  # docs/method.md §6


def test_overrides_are_parsed_as_yaml_and_typed():
    config = load_config(synth_config("pretrain"), [
        "train.lr=2e-5", "train.betas=[0.8, 0.99]", "train.clip=null", "model.overrides.sab_modes=[J]",
        "model.overrides.sib=null", "eval.splits=[val]", "name=my-model", "train.max_steps=7", "train.compile=true"])
    assert config.train.lr == 2e-5 and isinstance(config.train.lr, float)  # "2e-5": YAML 1.1 reads a string
    assert config.train.betas == (0.8, 0.99)
    assert config.train.clip is None
    # configs/synth/pretrain.yaml sets initializer_range and dropout 0 for its small model
    assert config.model.overrides == {"initializer_range": 0.08, "hidden_dropout": 0.0, "attention_dropout": 0.0,
                                      "fusion_dropout": 0.0, "sab_modes": ["J"], "sib": None}
    assert config.eval.splits == ["val"] and config.name == "my-model" and config.train.max_steps == 7
    assert config.train.compile is True and load_config(synth_config("pretrain")).train.compile is False
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a.b=runs/x") == ("a.b", "runs/x")


def test_saved_config_round_trips(tmp_path):
    config = load_config(synth_config("vqa"), ["train.seed=3", "model.overrides.top_k=2"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert set(yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]) == set(vars(config.train))


def test_report_name():
    assert from_dict({"task": "vqa", "model": {"preset": "uniter-base", "init_from": "runs/p"}}).report_name == "uniter"
    assert from_dict({"task": "vqa", "model": {"preset": "switchbert-base"}}).report_name == "switchbert-nopretrain"
    assert from_dict({"task": "vqa", "name": "x"}).report_name == "x"


def test_report_name_tells_model_variants_apart_and_recipe_hash_tells_recipes_apart():
    base = {"task": "vqa", "model": {"preset": "uniter-base", "init_from": "runs/pretrain/uniter"},
            "train": {"lr": 2e-5, "epochs": 3}, "output_dir": "runs/vqa/uniter-seed0"}
    a = from_dict(base)
    assert a.report_name == "uniter" and len(a.recipe_hash) == 6  # the name is the same for every task
    # Seeds, output directories, data paths and logging change neither ...
    same = from_dict({**base, "output_dir": "/abs/runs/vqa/uniter-seed1", "train": {**base["train"], "seed": 1,
                      "log_every": 7, "progress": False}, "data": {"root": "/elsewhere", "num_workers": 4}})
    assert (same.report_name, same.recipe_hash) == (a.report_name, a.recipe_hash)
    # ... a training override changes the recipe, a model override the name.
    lr = from_dict({**base, "train": {**base["train"], "lr": 5e-5}})
    assert lr.report_name == a.report_name and lr.recipe_hash != a.recipe_hash
    k2 = from_dict({**base, "model": {**base["model"], "overrides": {"top_k": 2}}})
    assert k2.report_name.startswith("uniter-") and len(k2.report_name) == len("uniter-") + 6
    assert from_dict({**base, "task": "refexp", "model": k2.to_dict()["model"]}).report_name == k2.report_name
    # BERT weights or random weights: two models; which BERT directory: the same one.
    nb = {"task": "vqa", "model": {"preset": "switchbert-base", "bert_dir": "/b"}}
    assert from_dict(nb).report_name.startswith("switchbert-nopretrain-")
    assert from_dict(nb).report_name == from_dict({**nb, "model": {**nb["model"], "bert_dir": "/c"}}).report_name


@pytest.mark.parametrize("overrides, message", [
    (["train.bogus=1"], "unknown key train.bogus"),
    (["bogus=1"], "unknown key bogus"),
    (["data.cc_train.x=1"], "data.cc_train is not a section"),
    (["train.epochs=ten"], "train.epochs must be an integer, got 'ten'"),
    (["train.epochs=2.5"], "train.epochs must be an integer"),
    (["train.amp=1"], "train.amp must be true or false"),
    (["train.compile=1"], "train.compile must be true or false"),
    (["train.lr=fast"], "train.lr must be a number"),
    (["train.betas=[0.9]"], "train.betas must have 2 entries"),
    (["train.warmup=1.5"], "train.warmup is a fraction"),
    (["train.batch_size=10", "train.grad_accum=3"], "not divisible by train.grad_accum=3"),
    (["data.fraction=0"], "data.fraction must be in (0, 1]"),
    (["train.tau_min=0"], "need tau_max >= tau_min > 0"),
    (["task=captioning"], "task must be one of"),
    (["model.preset=bert-huge"], "unknown preset 'bert-huge'"),
    (["model.overrides.sab_modes=[XX]"], "model.overrides: ModelConfig.sab_modes: unknown modes"),
    (["model.overrides.depth=3"], "model.overrides: unknown ModelConfig fields ['depth']"),
    (["train.lr"], "must look like key.subkey=value"),
])
def test_bad_config_names_file_and_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(synth_config("pretrain"), overrides)
    assert message in str(err.value)
    assert "pretrain.yaml" in str(err.value)


def test_unknown_key_in_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("task: vqa\ntrain:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key train.learning_rate \(in train; known keys"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_missing_data_path(tmp_path):
    config = load_config(synth_config("vqa"), [f"data.root={tmp_path}", "model.init_from=null"])
    with pytest.raises(ConfigError, match=r"data.features: .*features.lmdb does not exist"):
        check_paths(config, "vqa.yaml")
    config = load_config(synth_config("vqa"), [f"data.root={tmp_path}", "data.vqa_val_questions=null"])
    with pytest.raises(ConfigError, match="data.vqa_val_questions is required for task 'vqa'"):
        check_paths(config, "vqa.yaml")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.mark.parametrize("main, args, message", [
    (pretrain_main, ["train.bogus=1"], "unknown key train.bogus"),
    (pretrain_main, ["model.bert_dir=/no/such/bert"], "model.bert_dir: /no/such/bert does not exist"),
    (finetune_main, ["model.init_from=/no/such/run"], "model.init_from: /no/such/run does not exist"),
    (finetune_main, ["data.root=/no/such/data"], "data.features: /no/such/data/features.lmdb does not exist"),
    (finetune_main, ["model.overrides.region_feat_dim=2048"], "has 64-d region features but model"),
])
def test_cli_stops_before_any_work(synth, tmp_path, capsys, main, args, message):
    out = tmp_path / "run"
    config = synth_config("pretrain" if main is pretrain_main else "vqa")
    rc = main([config, f"data.root={synth}", f"output_dir={out}", "model.init_from=null", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (out / "last").exists() and not (out / "metrics.jsonl").exists()  # no work was done


def test_pretrain_command_refuses_a_finetuning_config(tmp_path, capsys):
    assert pretrain_main([synth_config("vqa"), f"output_dir={tmp_path}/x"]) == 2
    assert "use `switchbert finetune`" in capsys.readouterr().err


def test_defaults_are_a_valid_config():
    assert isinstance(from_dict({}), ExperimentConfig)
    assert Path(from_dict({"data": {"root": "/d", "features": "f"}}).data.path("features")) == Path("/d/f")
