"""``model.init_from`` and ``model.preset`` must agree on the architecture: a checkpoint of another model is an
error naming both, ``model.preset: from_checkpoint`` is the explicit way to train whatever it holds, and the
result records name the model that actually trained."""

from __future__ import annotations

import pytest
import torch

from switchbert.cli import main
from switchbert.models import build_model
from switchbert.models.build import ArchitectureMismatchError
from tests.test_train_support import QUIET, make_synth, read_jsonl, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def uniter_run(tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("runs") / "uniter"
    build_model("uniter-tiny").save_pretrained(run / "best")
    return run


def test_a_checkpoint_of_another_architecture_is_an_error_naming_both(uniter_run):
    with pytest.raises(ArchitectureMismatchError) as info:
        build_model("switchbert-tiny", init_from=uniter_run)
    msg = str(info.value)
    assert "switchbert-tiny" in msg and "uniter-tiny" in msg and "sab_modes" in msg and str(uniter_run) in msg
    assert "from_checkpoint" in msg
    # The same architecture loads, and overrides apply to both sides (a runtime top_k on a Switch-BERT).
    assert build_model("uniter-tiny", init_from=uniter_run).config.sab_modes == ("J",)
    assert build_model("from_checkpoint", init_from=uniter_run).config.name == "uniter-tiny"


def test_finetune_refuses_before_any_work_and_from_checkpoint_records_what_trained(synth, uniter_run, tmp_path,
                                                                                    capsys, caplog):
    base = ["finetune", synth_config("vqa"), f"data.root={synth}", f"model.init_from={uniter_run}",
            "train.batch_size=8", "train.max_steps=1", *QUIET]
    out = tmp_path / "wrong"
    assert main([*base, f"output_dir={out}", "model.preset=switchbert-tiny"]) != 0
    err = capsys.readouterr().err
    assert "switchbert-tiny" in err and "uniter-tiny" in err
    assert not out.exists()  # refused before the run directory was made
    out = tmp_path / "right"
    assert main([*base, f"output_dir={out}", "model.preset=from_checkpoint"]) == 0
    assert "training the 'uniter-tiny' model" in caplog.text  # the choice is logged
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    models = {r["model"] for r in read_jsonl(out / "results.jsonl")}
    assert models == {"uniter-tiny"}, models


def test_from_checkpoint_takes_runtime_overrides_and_needs_init_from(uniter_run, tmp_path):
    from switchbert.train.config import ConfigError, from_dict

    base = {"task": "vqa", "output_dir": str(tmp_path / "r")}
    cfg = from_dict({**base, "model": {"preset": "from_checkpoint", "init_from": str(uniter_run),
                                       "overrides": {"hidden_dropout": 0.0}}})
    assert cfg.model.overrides == {"hidden_dropout": 0.0}
    with pytest.raises(ConfigError, match="did you mean model.overrides.hidden_dropout"):
        from_dict({**base, "model": {"preset": "from_checkpoint", "init_from": str(uniter_run),
                                     "overrides": {"hiden_dropout": 0.0}}})
    with pytest.raises(ConfigError, match="from_checkpoint trains the model that model.init_from holds"):
        from_dict({**base, "model": {"preset": "from_checkpoint"}})
