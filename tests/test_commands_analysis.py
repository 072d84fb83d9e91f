"""`switchbert routes`, `flops` and `route-dynamics` end to end on a tiny saved model and a tiny synthetic benchmark."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import torch

import switchbert
from switchbert.analysis.report import load_report
from switchbert.cli import main
from switchbert.data.synth import generate



@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis_cli")
    # switchbert-tiny reads 64-d region features.
    generate(root / "synth", num_images=20, seed=0, feat_dim=64, num_classes=16, questions_per_image=2)
    torch.manual_seed(0)
    model = switchbert.create_model("switchbert-tiny")
    model.save_pretrained(root / "model")
    return root


def test_routes_writes_the_report(workspace, capsys):
    out = workspace / "report"
    code = main(["routes", str(workspace / "model"), str(workspace / "synth"), "--task", "all", "--split", "val",
                 "--max-samples", "6", "--batch-size", "4", "--out", str(out)])
    assert code == 0
    assert "refexp: 6 samples" in capsys.readouterr().out
    raw = json.loads((out / "routes.json").read_text())
    assert set(raw["tasks"]) == {"vqa", "retrieval", "refexp"}
    stats = load_report(out / "routes.json")
    for task, s in stats.items():
        assert s.num_samples == 6 and len(s.layers) == 3
        assert sum(a.count for a in s.top_architectures) <= 6
        assert s.flops is not None and s.flops.num_samples == 6
        assert raw["flops"][task]["rows"][0]["name"] == "switchbert-tiny"
        for kind in ("route", "modes", "sib"):
            png = out / f"{task}_{kind}.png"
            assert png.stat().st_size > 1024 and mpimg.imread(png).shape[0] > 100
    md = (out / "routes.md").read_text()
    assert "## Routes: switchbert-tiny on refexp (val)" in md and "![refexp_route](refexp_route.png)" in md
    assert "| UNITER | fixed |" in md

    # Table 7 along the measured routes.
    assert main(["flops", str(workspace / "model"), "--routes", str(out / "routes.json"), "--samples", "100",
                 "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert "Training FLOPs over 100 samples x 2 epochs" in text and "hard routes of 6 samples" in text


def test_routes_needs_a_manifest(workspace, capsys):
    code = main(["routes", str(workspace / "model"), str(workspace), "--task", "vqa", "--out", str(workspace / "x")])
    assert code == 2
    assert "manifest.json" in capsys.readouterr().err


def test_flops_preset_table(capsys):
    assert main(["flops", "switchbert-base", "--text-len", "38", "--regions", "36", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = {(r["model"], r["notion"]): r["gflops"] for r in result["per_sample"]}
    assert rows[("UNITER", "fixed")] == pytest.approx(13.067380224)
    assert rows[("switchbert-base", "training, uniform routing (paper)")] > rows[("UNITER", "fixed")]
    assert main(["flops", "uniter-base", "--samples", "1000", "--epochs", "20"]) == 0
    assert "| uniter-base | fixed |" in capsys.readouterr().out


def test_route_dynamics(workspace, tmp_path):
    records = [{"step": s, "tau": 5.0 * 0.5 ** s, "routes/sab/L1/SS": 0.25 + 0.1 * s, "routes/sab/L1/J": 0.75 - 0.1 * s,
                "routes/sib/L2/text/out": 0.5, "routes/sib/L2/region/mid": 0.5} for s in range(5)]
    records.append({"split": "val", "step": 4, "epoch": 0, "vqa_score": 0.3})  # the trainer's validation lines
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert main(["route-dynamics", str(path), "--out", str(tmp_path / "fig")]) == 0
    for kind in ("sab", "sib"):
        assert (tmp_path / "fig" / f"route_dynamics_{kind}.png").stat().st_size > 1024


def test_routes_of_an_untrained_model_say_the_switchers_are_undecided(workspace, capsys):
    out = workspace / "report_ties"
    assert main(["routes", str(workspace / "model"), str(workspace / "synth"), "--task", "vqa", "--split", "val",
                 "--max-samples", "6", "--batch-size", "6", "--out", str(out)]) == 0
    assert "Undecided: all 7 switchers are near-ties" in capsys.readouterr().out
    md = (out / "routes.md").read_text()
    assert "How sure the switchers are" in md and "**near-tie**" in md


def test_flops_over_a_training_log_and_its_plot(tmp_path, capsys):
    """`switchbert flops --metrics`: the run's own count from its log (batch size from config.yaml), and
    route-dynamics draws the active paths."""
    from switchbert.analysis.flops import training_flops_log
    from switchbert.analysis.routes import route_probability_log
    from switchbert.config import MODES
    from switchbert.outputs import LayerRoute

    config = switchbert.get_config("switchbert-tiny")
    run = tmp_path / "run"
    run.mkdir()
    lines = []
    for step in (1, 10, 20):
        w = torch.tensor([[0.25] * 4 if step < 20 else [0.0, 0.0, 0.0, 1.0]] * 2)
        routes = (LayerRoute(MODES, w, w, w.argmax(-1)),) * 3
        lines.append({"split": "train", "step": step, "tau": 1.0, **route_probability_log(routes),
                      **training_flops_log(config, routes, torch.ones(2, 5, dtype=torch.bool),
                                           torch.ones(2, 4, dtype=torch.bool))})
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    (run / "config.yaml").write_text("train:\n  batch_size: 2\n")
    assert main(["flops", "--metrics", str(run / "metrics.jsonl"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 20 and result["global_batch"] == 2 and result["active_threshold"] == 0.01
    assert [s[4] for s in result["series"]] == [4.0, 4.0, 1.0]
    assert main(["route-dynamics", str(run / "metrics.jsonl"), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "route_dynamics_active.png").stat().st_size > 1024


def test_routes_and_flops_take_a_run_directory(workspace, tmp_path, capsys):
    # A run directory as training writes it: the model lives in best/ (evaluate and init_from read it so).
    import shutil

    run = tmp_path / "runs" / "vqa"
    shutil.copytree(workspace / "model", run / "best")
    assert main(["flops", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "switchbert-tiny"
    assert main(["routes", str(run), str(workspace / "synth"), "--task", "vqa", "--max-samples", "4",
                 "--batch-size", "4", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "routes.json").is_file()
    assert main(["flops", str(tmp_path / "runs")]) == 2  # neither a model nor a run: a one-line error
    assert "no checkpoint" in capsys.readouterr().err


def test_routes_all_on_a_vqa_only_manifest_writes_vqa(workspace, tmp_path, capsys):
    synth = workspace / "synth"
    manifest = json.loads((synth / "manifest.json").read_text())
    data = tmp_path / "vqa_only"
    data.mkdir()
    keep = {k: str(synth / v) for k, v in manifest.items() if k == "features" or k.startswith("vqa_")}
    (data / "manifest.json").write_text(json.dumps(keep))
    out = tmp_path / "report"
    assert main(["routes", str(workspace / "model"), str(data), "--task", "all", "--max-samples", "4",
                 "--batch-size", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "skipped retrieval: " in text and "'flickr_val'" in text and "skipped refexp: " in text
    assert set(json.loads((out / "routes.json").read_text())["tasks"]) == {"vqa"}
    # Asking for a missing task by name stays an error, without KeyError's quotes around the message.
    assert main(["routes", str(workspace / "model"), str(data), "--task", "retrieval", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has no 'flickr_val'" in err and "error: \"" not in err


def test_routes_under_trainval_analyse_vqa_minival(workspace, tmp_path, capsys):
    """The task owns the protocol: with data.vqa_protocol=trainval, val was trained on and `val` means minival."""
    out = tmp_path / "report"
    assert main(["routes", str(workspace / "model"), str(workspace / "synth"), "--task", "vqa", "--split", "val",
                 "--set", "data.vqa_protocol=trainval", "--set", "data.vqa_minival_size=3", "--batch-size", "4",
                 "--out", str(out)]) == 0
    assert "vqa: 3 samples" in capsys.readouterr().out
    assert "## Routes: switchbert-tiny on vqa (minival)" in (out / "routes.md").read_text()
