"""Figures: every plot writes a real PNG of sensible size; training dynamics read the logged keys."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import torch

from switchbert.analysis.plots import (plot_mode_frequencies, plot_route_diagram, plot_sib_frequencies,
                                       plot_training_dynamics)
from switchbert.analysis.routes import Architecture, LayerChoice, collect_routes, route_probability_log
from switchbert.temperature import TemperatureSchedule
from tests.helpers import batch_for, tiny_model



def check_png(path, min_w: int = 300, min_h: int = 200) -> None:
    assert path.is_file() and path.stat().st_size > 1024
    image = mpimg.imread(path)
    h, w = image.shape[:2]
    assert w >= min_w and h >= min_h
    assert image.std() > 0.01  # not a blank canvas


@pytest.fixture(scope="module")
def stats():
    model = tiny_model()
    return collect_routes(model, [batch_for(model, batch_size=8, seed=k) for k in range(2)], task="demo")


def test_route_diagram(tmp_path, stats):
    check_png(plot_route_diagram(stats.top_architectures[0], tmp_path / "top.png", "demo"))
    # Every candidate kind and mode, and the last3 set, draw.
    arch = Architecture((LayerChoice("SS"), LayerChoice("SC", "mid", "in"), LayerChoice("CS", "in", "out"),
                         LayerChoice("J", "out", "mid")), 5, 0.5)
    check_png(plot_route_diagram(arch, tmp_path / "all.png"), min_h=400)
    last3 = Architecture((LayerChoice("J"), LayerChoice("SS", "l-1", "l-2"), LayerChoice("SC", "l-3", "l-2")), 1, 0.1)
    check_png(plot_route_diagram(last3, tmp_path / "last3.png"))


def test_frequency_bars(tmp_path, stats):
    check_png(plot_mode_frequencies(stats, tmp_path / "modes.png"))
    check_png(plot_sib_frequencies(stats, tmp_path / "sib.png"))


def test_sib_bars_need_a_sib(tmp_path):
    model = tiny_model(sib=None)
    s = collect_routes(model, [batch_for(model)])
    with pytest.raises(ValueError, match="no Switch-Input Block"):
        plot_sib_frequencies(s, tmp_path / "x.png")


def test_training_dynamics_from_logged_keys(tmp_path):
    """The log a trainer writes: route_probability_log of a batch, plus step and tau, one JSON per line."""
    model = tiny_model()
    schedule = TemperatureSchedule(total_steps=6)
    batch = batch_for(model, batch_size=2)
    path = tmp_path / "metrics.jsonl"
    with path.open("w") as fh, torch.no_grad():
        for step in range(6):
            model.set_temperature(schedule(step))
            # Stand-in for learning: move layer 1's switcher towards SS and layer 2's text input towards mid.
            model.sab_switchers[0].mlp[-1].bias[0] = 0.4 * step
            model.sib_switchers[0].mlp[-1].bias[1] = 0.3 * step
            out = model(batch)
            fh.write(json.dumps({"step": step * 100, "tau": schedule(step), **route_probability_log(out)}) + "\n")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[-1]["routes/sab/L1/SS"] > 0.5 > records[0]["routes/sab/L1/SS"]
    assert records[-1]["routes/sib/L2/text/mid"] > records[0]["routes/sib/L2/text/mid"]
    check_png(plot_training_dynamics(path, tmp_path / "sab.png", "sab"), min_w=600)
    check_png(plot_training_dynamics(records, tmp_path / "sib.png", "sib"), min_w=600)
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_training_dynamics([{"step": 0, "tau": 1.0}], tmp_path / "none.png")
