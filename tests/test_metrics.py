"""Metrics against naive loops and hand-computed cases."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
import torch

from switchbert.metrics import (
    PAPER_TABLE3,
    aggregate_runs,
    canonical_model_name,
    default_columns,
    format_table3,
    load_records,
    predict_answers,
    refexp_accuracy,
    refexp_accuracy_per_split,
    refexp_correct,
    retrieval_ranks,
    retrieval_recall,
    score_all_pairs,
    split_recipes,
    vqa_accuracy,
    vqa_question_scores,
    vqa_target_score,
    write_vqa_results,
)

# ---------------------------------------------------------------------------------------------
# Retrieval


def naive_ranks(scores: np.ndarray, c2i: np.ndarray) -> tuple[list[int], list[int]]:
    """Ranks by explicit loops, ties pessimistic: an equal-scoring negative ranks first."""
    nc, ni = scores.shape
    ir = []
    for c in range(nc):
        gt = scores[c, c2i[c]]
        ir.append(sum(1 for j in range(ni) if j != c2i[c] and scores[c, j] >= gt))
    tr = []
    for i in range(ni):
        own = [c for c in range(nc) if c2i[c] == i]
        if not own:
            tr.append(-1)
            continue
        best = max(scores[c, i] for c in own)
        tr.append(sum(1 for c in range(nc) if c not in own and scores[c, i] >= best))
    return ir, tr


def naive_recall(scores: np.ndarray, c2i: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    ir, tr = naive_ranks(scores, c2i)
    tr = [r for r in tr if r >= 0]
    out = {f"ir_r{k}": 100.0 * sum(r < k for r in ir) / len(ir) for k in ks}
    out.update({f"tr_r{k}": 100.0 * sum(r < k for r in tr) / len(tr) for k in ks})
    return out


def test_retrieval_hand_computed():
    # 4 captions, 3 images; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2.
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # caption 0: own image first           -> IR rank 0
            [0.3, 0.5, 0.1],  # caption 1: image 1 above own         -> IR rank 1
            [0.4, 0.4, 0.4],  # caption 2: ties with both negatives  -> IR rank 2 (pessimistic)
            [0.8, 0.6, 0.7],  # caption 3: own is 2nd                -> IR rank 1
        ]
    )
    c2i = np.array([0, 0, 1, 2])
    ir, tr = retrieval_ranks(scores, c2i)
    assert ir.tolist() == [0, 1, 2, 1]
    # image 0: best own = 0.9 (caption 0), no other caption >= 0.9       -> 0
    # image 1: own 0.4 (caption 2); captions 1 (0.5) and 3 (0.6) are above -> 2
    # image 2: own 0.7 (caption 3); captions 0,1,2 score 0.2, 0.1, 0.4      -> 0
    assert tr.tolist() == [0, 2, 0]
    r = retrieval_recall(scores, c2i, ks=(1, 2))
    assert r == pytest.approx({"ir_r1": 25.0, "ir_r2": 75.0, "tr_r1": 200 / 3, "tr_r2": 200 / 3})


def test_retrieval_constant_scores_get_no_credit():
    r = retrieval_recall(np.zeros((10, 5)), np.repeat(np.arange(5), 2), ks=(1, 5))
    assert r["ir_r1"] == 0.0 and r["tr_r1"] == 0.0
    assert r["ir_r5"] == 100.0  # every image fits in the top 5 of 5
    assert r["tr_r5"] == 0.0  # 8 other captions tie above each image's own


@pytest.mark.parametrize("seed", range(6))
def test_retrieval_matches_naive_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    nc, ni = 40, 12
    scores = rng.integers(0, 6, size=(nc, ni)).astype(np.float32)  # few levels -> many ties
    c2i = rng.integers(0, ni, size=nc)
    c2i[:ni - 2] = np.arange(ni - 2)  # most images have a caption; maybe some have none
    ir, tr = retrieval_ranks(scores, c2i)
    naive_ir, naive_tr = naive_ranks(scores, c2i)
    assert ir.tolist() == naive_ir and tr.tolist() == naive_tr
    fast = retrieval_recall(torch.from_numpy(scores), torch.from_numpy(c2i))
    slow = naive_recall(scores, c2i)
    assert fast.keys() == slow.keys()
    for k in fast:
        assert fast[k] == pytest.approx(slow[k])


def test_retrieval_continuous_scores_flickr_layout():
    rng = np.random.default_rng(7)
    ni = 20
    c2i = np.repeat(np.arange(ni), 5)  # 5 captions per image, like Flickr30k
    scores = rng.normal(size=(5 * ni, ni))
    scores[np.arange(5 * ni), c2i] += 1.5  # a somewhat good model
    assert retrieval_recall(scores, c2i) == pytest.approx(naive_recall(scores, c2i))


def test_retrieval_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        retrieval_recall(np.zeros((4, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="3 image columns"):
        retrieval_recall(np.zeros((3, 3)), np.array([0, 1, 3]))
    with pytest.raises(ValueError, match="matrix"):
        retrieval_recall(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_recall(np.full((2, 2), np.nan), np.array([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        retrieval_recall(np.zeros((2, 2)), np.array([0.0, 1.5]))


def test_score_all_pairs_fills_every_pair_in_chunks():
    calls = []

    def score_fn(caption_idx: torch.Tensor, image_idx: torch.Tensor) -> torch.Tensor:
        assert caption_idx.dtype == torch.long and caption_idx.shape == image_idx.shape
        calls.append(caption_idx.numel())
        return (caption_idx * 100 + image_idx).double().unsqueeze(1)  # (n, 1) is accepted

    out = score_all_pairs(score_fn, num_captions=7, num_images=5, batch_size=8, progress=False)
    expected = torch.arange(7)[:, None] * 100 + torch.arange(5)[None, :]
    assert out.dtype == torch.float32 and torch.equal(out, expected.float())
    assert calls == [8, 8, 8, 8, 3]


def test_score_all_pairs_rejects_bad_callables_and_sizes():
    with pytest.raises(ValueError, match="returned shape"):
        score_all_pairs(lambda c, i: torch.zeros(c.numel() + 1), 3, 3, 4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        score_all_pairs(lambda c, i: torch.zeros(c.numel()), 3, 3, 0, progress=False)


def test_score_all_pairs_with_progress_bar(capsys):
    out = score_all_pairs(lambda c, i: (c == i).float(), 4, 4, 5, progress=True)
    assert torch.equal(out, torch.eye(4))
    assert "pair" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# VQA


def test_vqa_accuracy_hand_computed_with_official_scoring():
    pytest.importorskip("switchbert.data.vqa_answers")
    humans = [
        ["yes"] * 10,  # 10 matches -> 1
        ["2"] * 2 + ["3"] * 8,  # "Two" normalises to "2": 2 matches -> (2*(1/3) + 8*(2/3)) / 10 = 0.6
        ["dog"] * 3 + ["cat"] * 7,  # "the dog": 3 matches -> (3*(2/3) + 7*1) / 10 = 0.9
        ["red"] * 10,  # wrong answer -> 0
    ]
    preds = ["yes", "Two", "the dog", "blue"]
    scores = vqa_question_scores(preds, humans)
    np.testing.assert_allclose(scores, [1.0, 0.6, 0.9, 0.0])
    assert vqa_accuracy(preds, humans) == pytest.approx(100 * 2.5 / 4)


def test_vqa_accuracy_with_injected_scorer_and_errors():
    def exact(answer, humans):  # a trivial scorer: 1 if any human gave exactly this answer
        return float(answer in humans)

    assert vqa_accuracy(["a", "b", "c"], [["a"], ["x"], ["c", "d"]], score=exact) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_accuracy(["a", "b"], [["a"]], score=exact)
    with pytest.raises(ValueError, match="non-empty"):
        vqa_accuracy(["a"], [[]], score=exact)
    with pytest.raises(ValueError, match="empty"):
        vqa_accuracy([], [], score=exact)


def test_predict_answers_and_target_score():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert predict_answers(logits, ["no", "yes", "2"]) == ["yes", "no"]

    class Vocab:  # AnswerVocab-like
        answers = ["no", "yes", "2"]

    assert predict_answers(logits.numpy(), Vocab()) == ["yes", "no"]
    with pytest.raises(ValueError, match="A=2"):
        predict_answers(logits, ["no", "yes"])
    targets = torch.tensor([[0.0, 0.9, 0.3], [0.6, 1.0, 0.0]])
    assert vqa_target_score(logits, targets) == pytest.approx(100 * (0.9 + 0.6) / 2)


def test_write_vqa_results_is_the_server_format(tmp_path):
    path = write_vqa_results(tmp_path / "sub" / "results.json", np.array([5, 3]), ["yes", "2"])
    assert json.loads(path.read_text()) == [{"question_id": 5, "answer": "yes"}, {"question_id": 3, "answer": "2"}]
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]  # no temporary left over
    with pytest.raises(ValueError, match="duplicate question ids \\[5\\]"):
        write_vqa_results(tmp_path / "r.json", [5, 5], ["a", "b"])
    with pytest.raises(ValueError, match="2 question ids but 1"):
        write_vqa_results(tmp_path / "r.json", [1, 2], ["a"])
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------------
# RefExp


def test_refexp_hand_computed():
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.3, 5.0],  # the padded region scores highest but is never picked -> region 1
            [0.2, 0.1, 0.0, 0.0],  # region 0 picked, IoU exactly 0.5 -> miss (strict)
            [0.0, 0.0, 0.0, 0.0],  # no valid region -> miss
            [1.0, 2.0, 3.0, 4.0],  # region 3, IoU 0.51 -> hit
        ]
    )
    ious = torch.tensor([[0.0, 0.7, 0.0, 0.9], [0.5, 0.9, 0.0, 0.0], [0.9] * 4, [0.0, 0.0, 0.0, 0.51]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False], [False] * 4, [True] * 4])
    assert refexp_correct(scores, ious, mask).tolist() == [True, False, False, True]
    assert refexp_accuracy(scores, ious, mask) == 50.0
    assert refexp_accuracy_per_split([True, False, False, True], ["testA", "testB", "testA", "testA"]) == {
        "testA": pytest.approx(200 / 3),
        "testB": 0.0,
    }


def test_refexp_matches_naive_loop():
    rng = np.random.default_rng(3)
    scores, ious = rng.normal(size=(30, 8)), rng.uniform(size=(30, 8))
    mask = rng.uniform(size=(30, 8)) < 0.7
    expected = []
    for b in range(30):
        valid = [n for n in range(8) if mask[b, n]]
        best = max(valid, key=lambda n: scores[b, n]) if valid else None
        expected.append(best is not None and ious[b, best] > 0.5)
    assert refexp_correct(scores, ious, mask).tolist() == expected


def test_refexp_bad_inputs():
    with pytest.raises(ValueError, match="share"):
        refexp_correct(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="bool"):
        refexp_correct(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="2 results but 1"):
        refexp_accuracy_per_split([True, False], ["val"])


# ---------------------------------------------------------------------------------------------
# Aggregation and Table 3


def _records():
    recs = []
    for seed, vqa, ir in [(0, 70.1, 61.0), (1, 70.9, 62.5), (2, 71.2, 63.0)]:
        recs.append({"model": "switchbert", "task": "vqa", "metric": "accuracy_test-dev", "seed": seed, "value": vqa})
        recs.append({"model": "switchbert", "task": "retrieval", "metric": "ir_r1", "seed": seed, "value": ir})
    recs.append({"model": "VL-BERT", "task": "refexp", "metric": "accuracy_testA", "seed": 0, "value": 70.0})
    recs.append({"model": "tiny", "task": "retrieval", "metric": "tr_r1", "seed": 0, "value": 10.0})
    recs.append({"model": "tiny", "task": "retrieval", "metric": "tr_r1", "seed": 1, "value": 14.0})
    return recs


def test_aggregate_runs_mean_and_sample_std():
    s = aggregate_runs(_records())
    vqa = s[("switchbert", "vqa", "accuracy_test-dev")]
    assert vqa.n == 3 and vqa.seeds == (0, 1, 2)
    assert vqa.mean == pytest.approx(statistics.mean([70.1, 70.9, 71.2]))
    assert vqa.std == pytest.approx(statistics.stdev([70.1, 70.9, 71.2]))  # ddof=1
    assert s[("tiny", "retrieval", "tr_r1")].std == pytest.approx(math.sqrt(8))
    assert math.isnan(s[("VL-BERT", "refexp", "accuracy_testA")].std)


def test_aggregate_runs_rejects_bad_records():
    rec = {"model": "m", "task": "vqa", "metric": "a", "seed": 0, "value": 1.0}
    with pytest.raises(ValueError, match="appears twice"):
        aggregate_runs([rec, dict(rec)])
    with pytest.raises(ValueError, match="lacks"):
        aggregate_runs([{k: v for k, v in rec.items() if k != "seed"}])
    with pytest.raises(ValueError, match="non-finite"):
        aggregate_runs([dict(rec, value=float("nan"))])


def test_format_table3_layout():
    table = format_table3(aggregate_runs(_records()))
    lines = table.splitlines()
    assert lines[0] == "| Model | Source | VQAv2 test-dev | F30k IR R@1 | F30k TR R@1 | RefCOCO+ |"
    rows = [ln for ln in lines[2:] if ln.startswith("|")]
    # Paper order (VL-BERT before Switch-BERT), unknown models last; a paper row follows each known model.
    # The paper's other models follow, so its whole Table 3 is beside ours.
    assert [r.split(" | ")[0:2] for r in rows] == [
        ["| VL-BERT", "ours"], ["| VL-BERT", "paper"], ["| Switch-BERT", "ours"], ["| Switch-BERT", "paper"],
        ["| tiny", "ours"], ["| UNITER", "paper"], ["| VisualBERT", "paper"], ["| LXMERT", "paper"],
        ["| ViLBERT", "paper"], ["| Switch-BERT, no pretraining", "paper"],
    ]
    assert "70.7 ± 0.62 | 62.2 ± 0.9 | 78.2 ± 1.6 | 72.8 ± 0.45" in rows[3]
    sb_vqa = statistics.stdev([70.1, 70.9, 71.2])
    assert f"70.7 ± {sb_vqa:.2f} (n=3)" in rows[2]
    assert "70.0 (n=1)" in rows[0] and "12.0 ± 2.83 (n=2)" in rows[4]
    assert "ddof=1" in table
    no_paper = format_table3(aggregate_runs(_records()), include_paper=False)
    assert "paper |" not in no_paper


def test_report_defaults_to_the_splits_the_records_have():
    # Records as `switchbert evaluate` writes them: VQA on val (test-dev needs the server), default names.
    recs = [{"model": "switchbert-tiny-3fa2c1", "task": "vqa", "metric": "accuracy_val", "seed": s, "value": v}
            for s, v in ((0, 50.0), (1, 52.0))]
    recs += [{"model": "uniter-0a1b2c", "task": "vqa", "metric": "accuracy_val", "seed": 0, "value": 48.0},
             {"model": "uniter-0a1b2c", "task": "refexp", "metric": "accuracy_val", "seed": 0, "value": 30.0}]
    summaries = aggregate_runs(recs)
    cols = default_columns(summaries)
    assert [(c.title, c.metric) for c in cols] == [("VQAv2 val", "accuracy_val"), ("F30k IR R@1", "ir_r1"),
                                                  ("F30k TR R@1", "tr_r1"), ("RefCOCO+ val", "accuracy_val")]
    table = format_table3(summaries)
    rows = {tuple(r.split(" | ")[:2]): r for r in table.splitlines() if r.startswith("| ")}
    assert "51.0 ± 1.41 (n=2)" in rows[("| switchbert-tiny-3fa2c1", "ours")]  # the VQA column is filled
    # The recipe hash does not hide a paper model; its paper row names the paper's split.
    assert "48.0 (n=1)" in rows[("| UNITER (uniter-0a1b2c)", "ours")]
    assert "| 68.8 ± 0.4 (test-dev) | 60.9 ± 0.7 | 76.4 ± 1.3 | 71.9 ± 0.67 (testA) |" in rows[("| UNITER", "paper")]
    assert len([k for k in rows if k[1] == "paper"]) == 7
    # A record on test-dev keeps the paper's column as it is.
    dev = aggregate_runs([dict(recs[0], metric="accuracy_test-dev")])
    assert default_columns(dev)[0].title == "VQAv2 test-dev"
    assert canonical_model_name("switchbert-nopretrain-f14550") == "switchbertnopretrain"


def test_paper_table_and_names():
    assert canonical_model_name("VL-BERT") == "vlbert"
    assert canonical_model_name("Switch-BERT (no pretraining)") == "switchbertnopretrain"
    assert PAPER_TABLE3["uniter"].values["F30k TR R@1"] == (76.4, 1.3)
    assert len(PAPER_TABLE3) == 7


def test_paper_numbers_are_written_once():
    from switchbert import paper

    # The report's rows and the parameter counts read the same table.
    assert [r.name for r in PAPER_TABLE3.values()] == [r.name for r in paper.TABLE3.values()]
    assert PAPER_TABLE3["switchbert"].params == "130.6M" and paper.PARAMS_M["switchbert-base"] == 130.6
    assert PAPER_TABLE3["lxmert"].values["VQAv2 test-dev"] == paper.TABLE3["lxmert"].vqa_test_dev == (67.1, 0.34)
    assert paper.PARAMS_M["vilbert-base"] == paper.TABLE3["vilbert"].params_m == 242.1


def test_split_recipes_names_each_recipe_of_one_model_and_task(caplog):
    recs = [{"model": "uniter", "task": "vqa", "value": 1.0}, {"model": "uniter", "task": "vqa", "value": 2.0},
            {"model": "lxmert", "task": "vqa", "value": 3.0}]
    assert split_recipes(recs, ["a", "a", "b"]) == recs  # one recipe per (model, task): names kept
    out = split_recipes(recs, ["lr1", None, "x"])
    assert [r["model"] for r in out] == ["uniter@lr1", "uniter@default", "lxmert"]
    assert "uniter on vqa was run with 2 recipes" in caplog.text
    assert canonical_model_name(out[0]["model"]) == "uniter"  # the paper's row still matches


def test_load_records_jsonl_and_json(tmp_path):
    recs = _records()
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in recs[:3]) + "\n\n")
    (tmp_path / "b.json").write_text(json.dumps(recs[3:]))
    assert load_records([tmp_path / "a.jsonl", tmp_path / "b.json"]) == recs
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        load_records(tmp_path / "bad.jsonl")


def test_vqa_accuracy_by_group_hand_computed():
    from switchbert.metrics import vqa_accuracy_by_group

    got = vqa_accuracy_by_group([1.0, 0.0, 0.3, 0.6], ["yes/no", "yes/no", "number", "number"])
    assert list(got) == ["number", "yes/no"] and got == pytest.approx({"number": 45.0, "yes/no": 50.0})
    with pytest.raises(ValueError, match="2 scores but 1 groups"):
        vqa_accuracy_by_group([1.0, 0.0], ["other"])
