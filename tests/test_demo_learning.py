"""The demo's pieces that say what its numbers mean: the seeds' verdict, the progress estimate, and
the synthetic benchmark's knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from switchbert.data.synth import COLORS, NUMBER_WORDS, SHAPES, SIZES, Detector, make_scenes
from switchbert.demo import DemoResult, Progress, compare_models


def _result(a: list[float], b: list[float]) -> DemoResult:
    r = DemoResult(out_dir=Path("."), report=Path("r.md"), seeds=list(range(len(a))))
    r.per_seed = {"Switch-BERT": [{"vqa": {"val": {"accuracy": v}}} for v in a],
                  "UNITER": [{"vqa": {"val": {"accuracy": v}}} for v in b]}
    return r


def test_verdict_beyond_within_and_one_seed():
    chance = {"vqa": {"val": {"accuracy": 40.0}}}
    beyond = compare_models(_result([70.0, 72.0], [60.0, 61.0]), chance)
    assert "Switch-BERT beats UNITER by 10.5 points, beyond the spread" in beyond
    assert "Switch-BERT and UNITER above it" in beyond
    reverse = compare_models(_result([60.0, 61.0], [70.0, 72.0]), chance)
    assert "UNITER beats Switch-BERT" in reverse
    within = compare_models(_result([60.0, 70.0], [64.0, 66.0]), chance)
    assert "within the spread" in within and "neither beats the other" in within
    one = compare_models(_result([60.0], [64.0]), chance)
    assert "one seed" in one and "**One seed per model**" in one and "--seeds 2" in one
    assert "**One seed per model**" not in beyond
    at_prior = compare_models(_result([40.5, 41.5], [40.0, 42.0]), chance)
    assert "neither model clearly above it" in at_prior


def test_progress_reports_share_and_time_left():
    clock = iter([0.0, 0.0, 30.0, 30.0, 330.0, 330.0])
    lines: list[str] = []
    # weights are reference seconds; this machine runs 1.5x slower, and its first stage 3x (start-up)
    p = Progress([("a", 10.0), ("b", 200.0), ("c", 290.0)], echo=lines.append, clock=lambda: next(clock))
    p.start()
    p.finish()
    p.start()
    p.finish()
    p.start()
    assert lines[0].startswith("[demo 1/3   0%] a") and "estimating the time left" in lines[0]
    # after the short first stage: (30 + 60) / (10 + 60) x 490 = 630 s, not the 1,470 s that its
    # 3x alone would give
    assert lines[1].startswith("[demo 2/3   2%] b") and "about 10m30s left" in lines[1]
    # after 210 of 500: (330 + 60) / (210 + 60) x 290 = 419 s, near the true 435 s
    assert lines[2].startswith("[demo 3/3  42%] c") and "about 6m59s left" in lines[2]


def test_progress_after_a_resume_ignores_the_skipped_stages_seconds():
    """Stages an earlier run finished take ~0 s when skipped: counting them would make the rest look
    almost free (a resumed study once read "about 23s left" with 200 stages to go)."""
    clock = iter([0.0, 0.0, 0.0, 0.0, 100.0, 100.0])  # init, start a, skip a, start b, finish b, start c
    lines: list[str] = []
    p = Progress([("a", 100.0), ("b", 100.0), ("c", 100.0), ("d", 100.0)], echo=lines.append,
                 clock=lambda: next(clock))
    p.start(0)
    p.event("skip", 0)
    p.start(1)  # the skipped stage is done (25%) but gives no rate: the estimate is the prior's
    p.event("finish", 1)
    p.start(2)
    assert lines[1].startswith("[demo 2/4  25%] b") and "about 5m00s left" in lines[1]
    # measured: 100 s for a 100-s stage, so 2 stages of 100 are left: (100 + 60) / (100 + 60) x 200
    assert lines[2].startswith("[demo 3/4  50%] c") and "about 3m20s left" in lines[2]


def test_progress_with_parallel_pipelines_replays_the_schedule():
    clock = iter([0.0, 0.0, 0.0, 60.0, 60.0])
    lines: list[str] = []
    # three one-stage pipelines of 60 reference seconds on two workers, then a 5 s serial stage
    p = Progress([("a", 60.0), ("b", 60.0), ("c", 60.0), ("report", 5.0)], echo=lines.append, workers=2,
                 pipelines=[[0], [1], [2]], clock=lambda: next(clock))
    p.event("start", 0)
    p.event("start", 1)
    p.event("finish", 0)  # at 60 s
    p.event("start", 2)
    # rate (60 + 60 x 1.2) / (60 + 60) = 1.1 s per unit: b has 66 - 60 = 6 s to go on its worker, c takes
    # 66 s on the freed one, then the report 5 s alone: 71 s, not the (6 + 66 + 5.5) of one worker
    assert lines[2].startswith("[demo 3/4  32%] c") and "about 1m11s left" in lines[2], lines[2]


def test_abstraction_zero_gives_word_level_features():
    rng = np.random.default_rng(0)
    scenes = make_scenes(20, rng)
    det = Detector(64, 40, abstraction=0.0, clutter=0.0)
    for scene, rec in zip(scenes, det.detect(scenes, np.random.default_rng(1))):
        feats = rec.features.astype(np.float32)
        assert len(feats) == len(scene.shape)  # no clutter: one region per object
        for f in feats:
            on = np.flatnonzero(f > 0)
            assert len(on) == 3 and np.allclose(f[on], 3.0)  # one shape, one colour, one size coordinate
            shape, color, size = on[0], on[1] - len(SHAPES), on[2] - len(SHAPES) - len(COLORS)
            assert shape < len(SHAPES) and color < len(COLORS) and size < len(SIZES)
        # the regions are the scene's objects, in some order
        got = sorted((int(np.flatnonzero(f > 0)[0]), int(np.flatnonzero(f > 0)[1]) - len(SHAPES)) for f in feats)
        assert got == sorted(zip(scene.shape.tolist(), scene.color.tolist()))


def test_abstraction_one_is_entangled_and_clutter_adds_regions():
    rng = np.random.default_rng(0)
    scenes = make_scenes(30, rng)
    plain = list(Detector(64, 40).detect(scenes, np.random.default_rng(1)))
    assert sum(len(r.features) for r in plain) > sum(len(s.shape) for s in scenes)  # duplicates and stuff
    dense = np.concatenate([r.features for r in plain]).astype(np.float32)
    assert (dense > 0).mean() > 0.3  # spread over every coordinate, not a few word coordinates


def test_collapse_to_the_text_prior_is_flagged():
    chance = {"vqa": {"val": {"accuracy": 42.0}}}
    text = compare_models(_result([43.0, 44.0], [70.0, 72.0]), chance)
    assert "**Warning**: Switch-BERT's vqa score (43.5) is less than 3 points above the text-only prior" in text
    assert "UNITER's vqa" not in text


def test_intra_modal_family_asks_image_only_questions(tmp_path):
    import json

    from switchbert.data.synth import QUESTION_FAMILIES, generate

    m = generate(tmp_path, 20, seed=0, feat_dim=16, num_classes=30, questions_per_image=3,
                 question_types=QUESTION_FAMILIES["intra_modal"], abstraction=0.0, clutter=0.0)
    assert set(m["stats"]["question_types"]) == {"count_all", "same_color"}
    qs = json.loads((tmp_path / m["vqa_train_questions"]).read_text())["questions"]
    assert {q["question"] for q in qs} <= {"how many objects are there?", "are any two objects the same color?"}
    # the counts are the scene's object counts: with clutter 0, one region per object
    from switchbert.data import open_feature_store

    store = open_feature_store(tmp_path / m["features"])
    anns = json.loads((tmp_path / m["vqa_train_annotations"]).read_text())["annotations"]
    text = {q["question_id"]: q["question"] for q in qs}
    for a in anns:
        if text[a["question_id"]].startswith("how many"):
            n = len(store.get(str(a["image_id"])).features)
            assert a["multiple_choice_answer"] in (str(n), NUMBER_WORDS[n])


def test_the_question_mix_changes_the_questions_alone(tmp_path):
    """Questions draw from their own random stream: two mixes over the same scenes share every caption,
    referring expression and region, so comparing question families compares the questions only."""
    from switchbert.data.synth import QUESTION_FAMILIES, generate

    a = generate(tmp_path / "a", 20, seed=0, feat_dim=16, num_classes=30, question_types=QUESTION_FAMILIES["cross_modal"])
    b = generate(tmp_path / "b", 20, seed=0, feat_dim=16, num_classes=30, questions_per_image=2,
                 question_types=("count_all",))
    for key in ("cc_train", "flickr_train", "flickr_test", "refcoco_refs", "refcoco_instances"):
        assert (tmp_path / "a" / a[key]).read_bytes() == (tmp_path / "b" / b[key]).read_bytes(), key
    from switchbert.data import open_feature_store

    fa, fb = open_feature_store(tmp_path / "a" / a["features"]), open_feature_store(tmp_path / "b" / b["features"])
    for image_id in ("1", "7", "20"):
        assert np.array_equal(fa.get(image_id).features, fb.get(image_id).features)
    assert (tmp_path / "a" / a["vqa_train_questions"]).read_bytes() != (tmp_path / "b" / b["vqa_train_questions"]).read_bytes()


def test_the_text_only_prior_is_given_per_question_type(tmp_path):
    import json

    from switchbert.data.synth import generate

    m = generate(tmp_path, 40, seed=0, feat_dim=16, num_classes=30)
    by_type, stats = m["stats"]["text_only_vqa_accuracy_by_type"], m["stats"]
    anns = json.loads((tmp_path / m["vqa_val_annotations"]).read_text())["annotations"]
    counts = {t: sum(a["question_type"] == t for a in anns) for t in by_type}
    assert set(by_type) == {a["question_type"] for a in anns}
    # the overall prior is the per-type priors weighted by each type's share of the val questions
    weighted = sum(by_type[t] * counts[t] for t in by_type) / len(anns)
    assert abs(weighted - stats["text_only_vqa_accuracy"]) < 1e-3

