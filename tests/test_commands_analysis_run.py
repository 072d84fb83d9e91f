"""Analysis that reads the run: ``routes RUN`` with the run's own config, ``flops RUN`` with its text length
and data size, ``evaluate RUN/best`` and ``route-dynamics RUN``."""

from __future__ import annotations

import json

import pytest

from switchbert.cli import main
from tests.test_train_support import QUIET, make_synth, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    synth = make_synth(tmp_path_factory.mktemp("synth"))
    out = tmp_path_factory.mktemp("runs") / "vqa"
    assert main(["finetune", synth_config("vqa"), f"data.root={synth}", f"output_dir={out}", "model.init_from=null",
                 "train.batch_size=8", "train.max_steps=2", "train.log_every=1", "data.max_text_len=17",
                 *QUIET]) == 0
    return out


def test_routes_of_a_run_read_its_config(run, tmp_path, capsys):
    assert main(["routes", str(run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    config = (run / "config.yaml").read_text()
    val = json.loads(open(_data_file(config, "vqa_val_questions")).read())["questions"]
    assert out.startswith(f"vqa: {len(val)} samples"), out  # the run's own validation split
    assert (tmp_path / "r" / "routes.json").is_file()
    assert main(["routes", str(run), "--task", "refexp", "--out", str(tmp_path / "x")]) == 2
    assert "is a vqa run" in capsys.readouterr().err


def _data_file(config_text: str, key: str) -> str:
    import yaml

    data = yaml.safe_load(config_text)["data"]
    return f"{data['root']}/{data[key]}"


def test_flops_of_a_run_use_its_text_length_and_data_size(run, capsys):
    assert main(["flops", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["text_len"] == 17 and result["region_tokens"] == 37
    train = json.loads(open(_data_file((run / "config.yaml").read_text(), "vqa_train_questions")).read())
    assert result["runs"]["uniform routing"]["samples"] == len(train["questions"])  # the run's training set


def test_evaluate_a_checkpoint_of_a_run_and_route_dynamics_of_a_run(run, tmp_path, capsys):
    assert main(["evaluate", str(run / "best"), "--no-progress"]) == 0
    assert "vqa val: accuracy" in capsys.readouterr().out
    assert main(["route-dynamics", str(run), "--out", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "route_dynamics_sab.png").is_file()
