"""The data commands end to end, through an argparse parser built with ``register``."""

import argparse
import json

from switchbert.commands.data import register
from switchbert.data.features import open_feature_store


def _main(argv):
    parser = argparse.ArgumentParser(prog="switchbert")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_synth_convert_inspect(tmp_path, capsys):
    d = tmp_path / "syn"
    assert _main(["synth", str(d), "--images", "20", "--seed", "1", "--feat-dim", "16", "--num-classes", "12"]) == 0
    assert "wrote 20 synthetic images" in capsys.readouterr().out
    assert _main(["features", "inspect", str(d / "features.lmdb"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 20 and info["feat_dim"] == 16 and info["num_classes"] == 12 and info["format"] == "fast"
    for fmt, dst in (("h5", tmp_path / "f.h5"), ("volta-b64", tmp_path / "b64"), ("volta", tmp_path / "raw")):
        assert _main(["features", "convert", str(d / "features.lmdb"), str(dst), "--format", fmt]) == 0
        assert open_feature_store(dst).format == fmt
    assert _main(["features", "inspect", str(tmp_path / "f.h5"), "--sample-id", "7"]) == 0
    out = capsys.readouterr().out
    assert "images       20" in out and "image 7:" in out
    assert _main(["features", "inspect", str(tmp_path / "nothing")]) == 2
    assert "feature store not found" in capsys.readouterr().err
