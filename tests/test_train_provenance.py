"""Every run records where it came from (versions, commit, command line, data fingerprints), and its model
card adds the metrics, the recipe, the license and the intended use, with the right epoch count."""

from __future__ import annotations

import json

import pytest

from tests.test_train_support import make_synth, pretrain

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_run_records_its_provenance_and_its_card_says_how_it_was_trained(tmp_path):
    synth = make_synth(tmp_path / "synth")
    out = tmp_path / "run"
    assert pretrain(synth, out, "train.epochs=1") == 0  # 4 steps: one whole epoch
    for where in (out, out / "last", out / "best"):
        p = json.loads((where / "provenance.json").read_text())
        assert {"switchbert", "torch", "python"} <= set(p["versions"]) and p["command"]
        assert {"features", "cc_train", "cc_valid"} <= set(p["data"])
        assert all(len(f["sha256_ends"]) == 16 and f["bytes"] > 0 for f in p["data"].values())
    card = (out / "last" / "README.md").read_text()
    assert "(1 epochs)" in card or "(1 epoch" in card
    assert "1 epoch completed" in card and "epoch 2" not in card, card
    assert "seed 0" in card and "learning rate" in card and "global batch 8" in card
    assert "best " in card and "latest validation" in card
    assert "license:" in card and "intended use:" in card and "switchbert 0." in card and "torch " in card
    assert "initialised: randomly" in card


def test_a_changed_data_file_changes_its_fingerprint(tmp_path):
    from switchbert.train.provenance import fingerprint

    f = tmp_path / "a.json"
    f.write_text("[1, 2]")
    a = fingerprint(f)
    f.write_text("[1, 3]")
    assert fingerprint(f)["sha256_ends"] != a["sha256_ends"]
    assert fingerprint(tmp_path / "missing") is None
