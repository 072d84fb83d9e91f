"""What the console says: the plan with the max_steps cap, and log lines around the progress bar."""

from __future__ import annotations

import logging
import sys

import pytest

from tests.test_train_support import pretrain
from tests.test_train_support import synth  # noqa: F401 (fixtures)


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# ------------------------------------------------------------------------------------- console
def test_plan_names_the_max_steps_cap_and_the_cut_epoch(synth, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert pretrain(synth, tmp_path / "run", "train.max_steps=6") == 0
    assert ("4 steps/epoch x 2 epochs = 8 steps, capped at 6 by train.max_steps "
            "(epoch 2 stops after 2 of its 4 steps)") in caplog.text
    assert "epoch 2 cut short by train.max_steps=6: 2 of its 4 steps" in caplog.text


def test_log_lines_go_around_the_bar_on_a_terminal(synth, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    handler = logging.StreamHandler(sys.stderr)  # the console handler the CLI installs
    logging.getLogger().addHandler(handler)
    caplog.set_level(logging.INFO)
    try:
        assert pretrain(synth, tmp_path / "run", "train.max_steps=4", "train.progress=true") == 0
    finally:
        logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert "it/s" in err or "step/s" in err or "s/step" in err  # the bar was drawn
    line = next(seg for seg in err.split("\n") if "epoch 1 (step 4)" in seg)
    assert line.split("\r")[-1].startswith("epoch 1 (step 4)")  # not appended to the bar's text
    assert not any(seg.startswith("step ") for seg in err.split("\n"))  # the bar replaces the lines
