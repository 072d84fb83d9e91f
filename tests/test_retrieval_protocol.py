"""Flickr30k: a repeated image line is refused; the controlled configs select the best epoch on
the whole validation split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchbert.data.errors import BadItemPolicy, DataError
from switchbert.data.retrieval import load_flickr_jsonl
from switchbert.metrics import retrieval_recall
from switchbert.train.config import load_config


def _write(tmp_path: Path, lines: list[dict]) -> Path:
    p = tmp_path / "test.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return p


def test_repeated_image_line_is_an_error_naming_file_and_line(tmp_path):
    lines = [{"id": "1", "sentences": ["a dog"]}, {"id": "2", "sentences": ["a cat"]}, {"id": "1", "sentences": ["a dog"]}]
    p = _write(tmp_path, lines)
    with pytest.raises(DataError, match=r"test\.jsonl, item 'line 3 \(image 1\)': image repeated \(first on line 1\)"):
        load_flickr_jsonl(p)
    policy = BadItemPolicy(True)
    with pytest.warns(UserWarning):
        images = load_flickr_jsonl(p, policy=policy)
    assert [im.image_id for im in images] == ["1", "2"] and policy.skipped == 1


def test_why_a_repeat_matters():
    # The same image twice is two candidates with equal scores: with pessimistic ties its captions
    # lose rank 1, so R@1 silently drops from 100 to 0 for them.
    scores = [[1.0, 0.0], [0.0, 1.0]]
    assert retrieval_recall(scores, [0, 1])["ir_r1"] == 100.0
    assert retrieval_recall([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [0, 1])["ir_r1"] == 50.0


def test_controlled_configs_validate_on_the_whole_val_split():
    root = Path(__file__).resolve().parents[1] / "configs" / "retrieval"
    for path in sorted(root.glob("*.yaml")):
        assert load_config(path).eval.retrieval_val_images == 0, path
