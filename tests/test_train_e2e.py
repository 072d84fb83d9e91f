"""End to end through the command line on the synthetic benchmark: pretrain, then fine-tune each task
from the pretrained run, then evaluate, then the multi-seed report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

import switchbert
from switchbert.cli import main
from tests.test_train_support import QUIET, make_synth, read_jsonl, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def pretrained(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "pretrain"
    rc = main(["pretrain", synth_config("pretrain"), f"data.root={synth}", f"output_dir={out}",
               "train.batch_size=8", "train.max_steps=4", "train.log_every=1", "train.warmup=0.25", *QUIET])
    assert rc == 0
    return out


def finetune(task: str, synth: Path, pretrained: Path, out: Path, *extra: str) -> Path:
    rc = main(["finetune", synth_config(task), f"data.root={synth}", f"output_dir={out}",
               f"model.init_from={pretrained}", "train.batch_size=8", "train.max_steps=3", "train.log_every=1",
               *QUIET, *extra])
    assert rc == 0
    rc = main(["evaluate", str(out), "--no-progress"])
    assert rc == 0
    return out


def test_pretrain_writes_checkpoints_metrics_and_routes(pretrained):
    for name in ("best", "last"):
        ckpt = pretrained / name
        assert {"config.json", "model.safetensors", "heads.safetensors", "trainer_state.pt"} <= {
            p.name for p in ckpt.iterdir()}
        model = switchbert.load_pretrained(ckpt)  # a checkpoint is a model directory
        assert model.config.name == "switchbert-tiny"
        card = (ckpt / "README.md").read_text()  # the model card says how the model was trained
        assert "trained for: pretrain" in card and "optimizer steps" in card and "of 4 planned steps" in card
        # The tied MLM decoder matrix is saved once, with the model, not in the heads.
        assert not any("word_embeddings" in k for k in load_file(str(ckpt / "heads.safetensors")))
    records = read_jsonl(pretrained / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    taus = [r["tau"] for r in train]
    assert taus[0] == pytest.approx(5.0) and taus[-1] == pytest.approx(0.1)  # anneals over the stage
    assert all(a > b for a, b in zip(taus, taus[1:]))
    lrs = [r["lr"] for r in train]  # warm-up 1 step, then linear decay to 0
    assert lrs == pytest.approx([3e-4, 3e-4, 2e-4, 1e-4])  # configs/synth/pretrain.yaml: lr 3e-4
    first = train[0]
    for key in ("loss", "mlm", "mrc", "itm", "samples_per_s", "grad_norm"):
        assert math.isfinite(first[key])
    assert first["loss"] == pytest.approx(first["mlm"] + first["mrc"] + first["itm"], rel=1e-5)
    # Route probabilities per layer: SAB modes sum to 1, SIB candidates sum to 1 per modality.
    sab = [first[f"routes/sab/L1/{m}"] for m in switchbert.MODES]
    assert sum(sab) == pytest.approx(1.0, abs=1e-5)
    sib = [first[f"routes/sib/L2/region/{c}"] for c in ("out", "mid", "in")]
    assert sum(sib) == pytest.approx(1.0, abs=1e-5)
    # FLOPs along the training routes (Table 7), with active paths counted at the threshold: at tau = 5
    # every mode is active, at tau = 0.1 the mixtures are nearly one-hot and far fewer are.
    from switchbert.analysis.flops import flops_from_training_log

    assert all(r["flops/active_threshold"] == 0.01 for r in train)
    assert train[0]["flops/active_sab"] > 3.5 and train[-1]["flops/active_sab"] < 2.5
    assert train[0]["flops/paper"] > train[-1]["flops/paper"]
    run = flops_from_training_log(records, global_batch=8)
    assert run.steps == 4 and run.totals["paper"] > 0
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 1 and 0 <= val[0]["itm_accuracy"] <= 100 and math.isfinite(val[0]["loss"])
    saved = (pretrained / "config.yaml").read_text()
    assert "max_steps: 4" in saved and "tau_max: 5.0" in saved  # the fully resolved config


@pytest.fixture(scope="module")
def vqa_run(synth, pretrained, tmp_path_factory) -> Path:
    return finetune("vqa", synth, pretrained, tmp_path_factory.mktemp("runs") / "vqa")


def test_vqa_finetune_and_evaluate(vqa_run, synth):
    metrics = json.loads((vqa_run / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["val"]["accuracy"] <= 100.0
    results = json.loads((vqa_run / "eval" / "vqa_results_val.json").read_text())
    questions = json.loads((synth / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    assert sorted(r["question_id"] for r in results) == sorted(q["question_id"] for q in questions)
    vocab = json.loads((vqa_run / "best" / "answer_vocab.json").read_text())
    # The server gets what annotators wrote for each class (its most frequent raw form).
    assert all(set(r) == {"question_id", "answer"} and r["answer"] in vocab["server_answers"] for r in results)
    # The record's accuracy is the official metric recomputed from the result file.
    from switchbert.metrics import vqa_accuracy

    anns = json.loads((synth / "vqa" / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]
    humans = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in anns}
    expected = vqa_accuracy([r["answer"] for r in results], [humans[r["question_id"]] for r in results])
    assert metrics["val"]["accuracy"] == pytest.approx(expected)
    records = read_jsonl(vqa_run / "results.jsonl")
    assert {r["metric"] for r in records} == {"accuracy_val", "target_score_val"}
    from switchbert.train.config import load_config

    config = load_config(vqa_run / "config.yaml")
    assert config.report_name.startswith("switchbert-tiny")  # + a hash of its model overrides, if any
    assert all(r["model"] == config.report_name and r["seed"] == 0 for r in records)
    assert all(r["recipe"] == config.recipe_hash and len(r["recipe"]) == 6 for r in records)



def test_evaluate_records_name_the_checkpoint_absolutely(vqa_run, monkeypatch):
    # `switchbert evaluate vqa` from the runs directory: a relative run directory, an absolute record.
    monkeypatch.chdir(vqa_run.parent)
    assert main(["evaluate", vqa_run.name, "--no-progress", "--splits", "val"]) == 0
    records = read_jsonl(vqa_run / "results.jsonl")
    assert records and all(r["checkpoint"] == str((vqa_run / "best").resolve()) for r in records)


def test_vqa_evaluating_another_split_keeps_the_first(vqa_run):
    # A second annotated split adds its record, metrics and result file; the first stays.
    first = json.loads((vqa_run / "eval" / "metrics.json").read_text())["val"]
    assert main(["evaluate", str(vqa_run), "--no-progress", "--splits", "train"]) == 0
    metrics = json.loads((vqa_run / "eval" / "metrics.json").read_text())
    assert metrics["val"] == first and set(metrics["train"]) == {"accuracy", "target_score"}
    assert set(metrics["checkpoints"]) == {"val", "train"}
    assert (vqa_run / "eval" / "vqa_results_val.json").is_file() and (vqa_run / "eval" / "vqa_results_train.json").is_file()
    records = read_jsonl(vqa_run / "results.jsonl")
    assert {r["metric"] for r in records} == {"accuracy_val", "target_score_val", "accuracy_train", "target_score_train"}
    assert [r["value"] for r in records if r["metric"] == "accuracy_val"] == [first["accuracy"]]


@pytest.fixture(scope="module")
def retrieval_run(synth, pretrained, tmp_path_factory) -> Path:
    return finetune("retrieval", synth, pretrained, tmp_path_factory.mktemp("runs") / "retrieval",
                    "eval.batch_size=16")


def test_retrieval_finetune_and_evaluate(retrieval_run):
    import torch

    from switchbert.metrics import retrieval_recall

    metrics = json.loads((retrieval_run / "eval" / "metrics.json").read_text())["test"]
    assert set(metrics) == {"ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "r_mean"}
    scores = torch.load(retrieval_run / "eval" / "retrieval_scores_test.pt")
    assert tuple(scores.shape) == (20, 4) and torch.isfinite(scores).all()  # 4 test images x 5 captions
    expected = retrieval_recall(scores, torch.arange(20) // 5)  # captions are stored image by image
    for k, v in expected.items():
        assert metrics[k] == pytest.approx(v)
    assert metrics["ir_r5"] == 100.0  # only 4 images: image R@5 is trivially 100
    records = {r["metric"] for r in read_jsonl(retrieval_run / "results.jsonl")}
    assert {"ir_r1", "tr_r1"} <= records  # test split: the plain names Table 3 reads


@pytest.fixture(scope="module")
def refexp_run(synth, pretrained, tmp_path_factory) -> Path:
    return finetune("refexp", synth, pretrained, tmp_path_factory.mktemp("runs") / "refexp")


def test_refexp_finetune_and_evaluate(refexp_run):
    metrics = json.loads((refexp_run / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"val", "testA", "testB"}
    assert all(0.0 <= metrics[s]["accuracy"] <= 100.0 for s in ("val", "testA", "testB"))
    records = {r["metric"] for r in read_jsonl(refexp_run / "results.jsonl")}
    assert records == {"accuracy_val", "accuracy_testA", "accuracy_testB"}


def test_report_table(vqa_run, retrieval_run, refexp_run, tmp_path, capsys):
    # A second "seed" for refexp: the same records relabelled, so the table shows mean ± std over 2.
    extra = tmp_path / "seed1.jsonl"
    rows = [dict(r, seed=1, value=r["value"] + 2.0) for r in read_jsonl(refexp_run / "results.jsonl")]
    extra.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "table.md"
    rc = main(["report", str(vqa_run), str(retrieval_run), str(refexp_run), str(extra), "--out", str(out),
               "--column", "VQA val=vqa:accuracy_val", "--column", "IR R@1=retrieval:ir_r1",
               "--column", "RefCOCO+ testA=refexp:accuracy_testA"])
    assert rc == 0
    table = out.read_text()
    assert table == capsys.readouterr().out
    header, _, row = table.splitlines()[:3]
    assert header.split("|")[3:6] == [" VQA val ", " IR R@1 ", " RefCOCO+ testA "]
    testa = [r["value"] for r in read_jsonl(refexp_run / "results.jsonl") if r["metric"] == "accuracy_testA"][0]
    assert f"{testa + 1.0:.1f} ± {2 ** 0.5:.2f} (n=2)" in row  # mean and sample std of x and x + 2


def test_evaluate_from_the_yaml_with_explicit_checkpoint(vqa_run, synth, tmp_path):
    out = tmp_path / "eval"
    rc = main(["evaluate", synth_config("vqa"), f"data.root={synth}", f"output_dir={vqa_run}",
               "--checkpoint", str(vqa_run / "last"), "--splits", "val", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert json.loads((out / "metrics.json").read_text())["checkpoint"] == str(vqa_run / "last")


def test_vqa_evaluation_writes_the_official_breakdown(vqa_run, synth):
    """``eval/vqa_accuracy_<split>.json`` has the official evaluator's keys; its overall is the metric,
    and the per-type figures are the per-question scores' means over each type's questions."""
    from switchbert.data.vqa_answers import soft_score

    assert main(["evaluate", str(vqa_run), "--no-progress", "--splits", "val"]) == 0
    accuracy = json.loads((vqa_run / "eval" / "metrics.json").read_text())["val"]["accuracy"]
    breakdown = json.loads((vqa_run / "eval" / "vqa_accuracy_val.json").read_text())
    assert breakdown["overall"] == pytest.approx(accuracy, abs=1e-9)
    anns = {a["question_id"]: a for a in
            json.loads((synth / "vqa" / "v2_mscoco_val2014_annotations.json").read_text())["annotations"]}
    predicted = {r["question_id"]: r["answer"] for r in json.loads((vqa_run / "eval" / "vqa_results_val.json").read_text())}
    for key, field in (("perAnswerType", "answer_type"), ("perQuestionType", "question_type")):
        groups: dict = {}
        for q, answer in predicted.items():
            groups.setdefault(anns[q][field], []).append(soft_score(answer, [x["answer"] for x in anns[q]["answers"]]))
        assert len(groups) > 1, key
        assert breakdown[key] == pytest.approx({g: 100 * sum(v) / len(v) for g, v in groups.items()}, abs=1e-9)
