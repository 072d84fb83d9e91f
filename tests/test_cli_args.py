"""The command line parses options, positionals and overrides in any order (docs/training.md, "The command line")."""

from __future__ import annotations

import itertools
import runpy
import sys

import pytest

import switchbert
import switchbert.commands.train as train_cli
from switchbert.cli import main


@pytest.fixture
def captured(monkeypatch):
    """Replaces the training and evaluation functions: only argument parsing runs."""
    seen: list = []
    monkeypatch.setattr(train_cli, "run_train", lambda a, stage: seen.append((stage, a)) or 0)
    monkeypatch.setattr(train_cli, "run_evaluate", lambda a: seen.append(("evaluate", a)) or 0)
    return seen


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_training_commands_take_every_order(captured, command):
    pieces = [["C.yaml"], ["--resume"], ["train.epochs=1"], ["-v"], ["data.x=2"]]
    orders = list(itertools.permutations(pieces))
    for order in orders:
        argv = [command] + [a for piece in order for a in piece]
        assert main(argv) == 0, argv
        stage, args = captured[-1]
        assert stage == command
        assert args.config == "C.yaml", argv
        assert args.resume is True and args.verbose is True, argv
        # The overrides keep their relative order (a later one wins on the same key).
        expected = ["train.epochs=1", "data.x=2"]
        if order.index(["data.x=2"]) < order.index(["train.epochs=1"]):
            expected.reverse()
        assert args.overrides == expected, argv
    assert len(captured) == len(orders) == 120


def test_verbose_before_or_after_the_command(captured):
    for argv, verbose in ((["-v", "pretrain", "C.yaml"], True), (["pretrain", "C.yaml", "-v"], True),
                          (["pretrain", "C.yaml", "--verbose"], True), (["pretrain", "C.yaml"], False)):
        assert main(argv) == 0
        assert captured[-1][1].verbose is verbose, argv


def test_standalone_entry_points_take_every_order(captured):
    assert train_cli.pretrain_main(["C.yaml", "-v", "a=1", "--resume", "b=2"]) == 0
    args = captured[-1][1]
    assert (args.config, args.overrides, args.resume, args.verbose) == ("C.yaml", ["a=1", "b=2"], True, True)


def test_evaluate_orders_and_splits_with_override(captured):
    for argv in (["evaluate", "runs/x", "--splits", "val", "test", "eval.batch_size=4"],
                 ["evaluate", "--splits", "val", "test", "--no-progress", "runs/x", "eval.batch_size=4"],
                 ["evaluate", "runs/x", "eval.batch_size=4", "--splits", "val", "test", "--no-progress"]):
        assert main(argv) == 0, argv
        args = captured[-1][1]
        assert args.run == "runs/x", argv
        assert args.splits in (["val", "test"], ["val", "test", "eval.batch_size=4"]), argv


def test_evaluate_moves_an_override_out_of_splits(tmp_path, monkeypatch):
    seen = {}

    def fake_load(path, overrides):
        seen["overrides"] = overrides
        raise ValueError("stop here")

    monkeypatch.setattr(train_cli, "load_config", fake_load)
    assert main(["evaluate", str(tmp_path), "--splits", "val", "eval.batch_size=4"]) == 2
    assert seen["overrides"] == ["eval.batch_size=4"]


def test_override_before_the_config_is_still_an_override(tmp_path, monkeypatch):
    # Real run_train up to load_config: the YAML is the positional without '='.
    seen = {}

    def fake_load(path, overrides):
        seen["path"], seen["overrides"] = path, overrides
        raise ValueError("stop here")

    monkeypatch.setattr(train_cli, "load_config", fake_load)
    assert main(["pretrain", "train.lr=1e-4", "C.yaml", "train.epochs=1"]) == 2
    assert seen == {"path": "C.yaml", "overrides": ["train.lr=1e-4", "train.epochs=1"]}


def test_unexpected_error_is_one_line_with_a_hint(monkeypatch, capsys):
    def boom(a, stage):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(train_cli, "run_train", boom)
    assert main(["pretrain", "C.yaml"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "switchbert pretrain: unexpected error: RuntimeError: CUDA out of memory"
    assert "-v" in err[1] and "traceback" in err[1] and len(err) == 2
    with pytest.raises(RuntimeError):  # -v shows the traceback
        main(["pretrain", "C.yaml", "-v"])


def test_key_error_message_is_not_quoted(monkeypatch, capsys):
    def missing(a, stage):
        raise KeyError("manifest.json has no 'flickr_val'")

    monkeypatch.setattr(train_cli, "run_train", missing)
    assert main(["pretrain", "C.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "switchbert pretrain: error: manifest.json has no 'flickr_val'"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("switchbert ") and out.split()[1][0].isdigit()
    assert switchbert.__version__


def test_python_dash_m_switchbert(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["switchbert", "--version"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("switchbert", run_name="__main__")
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("switchbert ")


def test_misspelt_command_suggests(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrian", "C.yaml"])
    assert e.value.code == 2
    assert "did you mean 'pretrain'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["features", "inspct", "x"])
    assert "did you mean 'inspect'?" in capsys.readouterr().err


def test_misspelt_config_key_suggests(tmp_path):
    from switchbert.train.config import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: vqa\nmodel:\n  preset: uniter-tiny\n")
    with pytest.raises(ConfigError, match=r"unknown key train\.eppochs \(did you mean train\.epochs\?"):
        load_config(cfg, ["train.eppochs=2"])
    cfg.write_text("task: vqa\nmodle:\n  preset: uniter-tiny\n")
    with pytest.raises(ConfigError, match=r"unknown key modle \(did you mean model\?"):
        load_config(cfg)


def test_report_splits_one_model_run_with_two_recipes(tmp_path, capsys):
    import json

    recs = [{"model": "uniter", "task": "vqa", "metric": "accuracy_val", "seed": s, "value": v, "recipe": r}
            for s, v, r in ((0, 50.0, "aaaaaa"), (1, 52.0, "aaaaaa"), (0, 40.0, "bbbbbb"))]
    recs.append({"model": "uniter", "task": "refexp", "metric": "accuracy_val", "seed": 0, "value": 30.0,
                 "recipe": "cccccc"})
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["report", str(f), "--no-paper"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| UNITER")]
    # Not averaged as seeds: one row per VQA recipe; the single-recipe task stays on the plain name.
    assert any("(uniter@aaaaaa) | ours | 51.0 ± 1.41 (n=2)" in r for r in rows), rows
    assert any("(uniter@bbbbbb) | ours | 40.0 (n=1)" in r for r in rows), rows
    assert any(r.startswith("| UNITER | ours | – |") and "30.0 (n=1)" in r for r in rows), rows


def test_misspelt_preset_and_model_field_suggest(tmp_path):
    from switchbert.train.config import ConfigError, load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: vqa\nmodel:\n  preset: uniter-tiny\n")
    with pytest.raises(ConfigError, match=r"did you mean model\.overrides\.top_k\?"):
        load_config(cfg, ["model.overrides.topk=2"])
    with pytest.raises(ConfigError, match=r"did you mean uniter-mini\?"):
        load_config(cfg, ["model.preset=uniter-mimi"])


def test_a_missing_config_names_only_the_config(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--resume"])
    err = capsys.readouterr().err
    assert "required: config" in err and "key=value" not in err.splitlines()[-1]


def test_a_reader_that_goes_away_ends_the_command_quietly():
    # `switchbert ... | head` used to end in "error: [Errno 32] Broken pipe": now exit 141, as SIGPIPE, silent.
    import subprocess
    import sys

    code = ("from switchbert.commands.parsing import run_command\n"
            "import argparse, sys\n"
            "def run(args):\n"
            "    for i in range(100000):\n"
            "        print('line', i)\n"
            "sys.exit(run_command('switchbert x', run, argparse.Namespace(verbose=False)))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 141 and err == "", err
