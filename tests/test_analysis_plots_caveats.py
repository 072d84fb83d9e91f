"""Figures carry their caveats on the image: a route figure of near-tie switchers is marked undecided, and an
active-paths figure says when the activity is Gumbel noise around undecided switchers."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402

import switchbert  # noqa: E402
from switchbert.analysis.plots import plot_active_paths, plot_report_figures  # noqa: E402
from switchbert.analysis.routes import collect_routes  # noqa: E402
from switchbert.data.random_batch import random_batch  # noqa: E402


def _description(path) -> str:
    return Image.open(path).info.get("Description", "")


def test_route_figures_of_an_untrained_model_are_marked_undecided(tmp_path):
    import torch

    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny").eval()  # untrained: switchers near uniform
    batches = [random_batch(model.config, batch_size=8, num_text=6, num_regions=4) for _ in range(2)]
    stats = collect_routes(model, batches, torch.device("cpu"))
    assert stats.near_ties()
    paths = plot_report_figures(stats, tmp_path, "vqa")
    assert paths and all("undecided" in _description(p).lower() for p in paths), [_description(p) for p in paths]


def test_active_paths_of_undecided_switchers_say_noise(tmp_path):
    records = [{"split": "train", "step": s, "flops/paper": 2.0, "flops/uniter": 1.0, "flops/active_threshold": 0.01,
                "flops/active_sab/L1": 3.9, "flops/active_sab/L2": 1.0,
                "routes/sab/L1/SS": 0.26, "routes/sab/L1/SC": 0.25, "routes/sab/L1/CS": 0.25, "routes/sab/L1/J": 0.24,
                "routes/sab/L2/SS": 0.01, "routes/sab/L2/SC": 0.01, "routes/sab/L2/CS": 0.01, "routes/sab/L2/J": 0.97}
               for s in (1, 2)]
    text = _description(plot_active_paths(records, tmp_path / "a.png"))
    assert "L1" in text and "L2" not in text and "Gumbel noise" in text
    decided = [{k: (0.97 if k.endswith("/J") else 0.01) if k.startswith("routes/") else v for k, v in r.items()}
               for r in records]
    assert _description(plot_active_paths(decided, tmp_path / "b.png")) == ""
