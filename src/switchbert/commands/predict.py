"""``switchbert predict RUN INPUTS``: a fine-tuned run on unannotated inputs, written as the server wants.

    vqa        INPUTS = a VQAv2 questions JSON ({"questions": [{question_id, image_id, question}]})
               -> vqa_results_<name>.json  [{"question_id", "answer"}], every question id exactly once
    retrieval  INPUTS = a Flickr30k-format JSON-lines file ({"id", "sentences"} per image)
               -> retrieval_scores_<name>.pt (captions x images) and retrieval_ranking_<name>.json
    refexp     INPUTS = a JSON list of {"ref_id", "image_id", "sentence"}
               -> refexp_results_<name>.json  [{"ref_id", "image_id", "region", "box": [x1, y1, x2, y2]}]

Regions come from the run's feature store (``data.features`` of its ``config.yaml``) or ``--features``.
A bad input (an image missing from the store, an empty question) is an error naming the file and the
item; ``--skip-bad`` drops it and says which ids were dropped. The VQA file is checked before it is
written: every question id of INPUTS that was not dropped appears exactly once.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

import torch

log = logging.getLogger(__name__)


def _store(args: argparse.Namespace, run: Path) -> Any:
    from switchbert.data import open_feature_store

    if args.features:
        return open_feature_store(args.features)
    from switchbert.train.config import load_config

    # RUN/config.yaml, or beside RUN/best when a checkpoint directory is given
    config_path = next((p for p in (run / "config.yaml", run.parent / "config.yaml") if p.is_file()), None)
    if config_path is None:
        raise FileNotFoundError(f"{run}: no config.yaml beside the checkpoint to find the feature store; pass --features")
    return open_feature_store(load_config(config_path).data.path("features"))


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _screen(items: list, problem: Callable[[Any], Optional[str]], inputs: Path, skip_bad: bool,
            key: Callable[[int, Any], Any], where: Callable[[int, Any], str]) -> tuple[list, list]:
    """(the items without a problem, (key, problem) of those dropped); without ``skip_bad`` the first
    problem is a DataError naming ``inputs`` and ``where`` the item is."""
    from switchbert.data.errors import DataError

    keep, dropped = [], []
    for i, item in enumerate(items):
        why = problem(item)
        if why is None:
            keep.append(item)
        elif skip_bad:
            dropped.append((key(i, item), why))
        else:
            raise DataError(inputs, where(i, item), f"{why} (--skip-bad drops it)")
    return keep, dropped


def predict_vqa(model: Any, store: Any, inputs: Path, out_dir: Path, batch_size: int, skip_bad: bool) -> Path:
    from switchbert.data.vqa import load_questions
    from switchbert.metrics.vqa import write_vqa_results

    questions = load_questions(inputs)

    def problem(q: dict) -> Optional[str]:
        if not isinstance(q.get("question"), str) or not q["question"].strip():
            return "empty question"
        if "image_id" not in q:
            return "no image_id"
        if str(q["image_id"]) not in store:
            return f"image {q['image_id']} is not in the feature store {store.path}"
        return None

    keep, dropped = _screen(questions, problem, inputs, skip_bad, key=lambda i, q: int(q["question_id"]),
                            where=lambda i, q: f"question #{i} (id {q['question_id']})")
    qids, answers = [], []
    for idx in _batches(len(keep), batch_size):
        part = [keep[i] for i in idx]
        answers += model.answer([q["question"] for q in part], image_ids=[q["image_id"] for q in part], store=store)
        qids += [int(q["question_id"]) for q in part]
    expected = {int(q["question_id"]) for q in keep}
    if sorted(qids) != sorted(expected) or len(set(qids)) != len(qids):  # before anything is written
        raise RuntimeError(f"{inputs}: the predictions do not cover every question id exactly once "
                           f"({len(qids)} answers, {len(expected)} questions)")
    name = inputs.stem
    path = write_vqa_results(out_dir / f"vqa_results_{name}.json", qids, answers)
    if dropped:
        shown = ", ".join(f"{q} ({why})" for q, why in dropped[:10])
        more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
        log.warning("--skip-bad dropped %d of %d questions of %s: %s%s; the evaluation server wants every "
                    "question of the split, so this file is for your own use", len(dropped), len(questions),
                    inputs, shown, more)
        (out_dir / f"vqa_dropped_{name}.json").write_text(json.dumps([{"question_id": q, "reason": why}
                                                                        for q, why in dropped]) + "\n")
    return path


def predict_retrieval(model: Any, store: Any, inputs: Path, out_dir: Path, batch_size: int, skip_bad: bool) -> Path:
    from switchbert.data.errors import BadItemPolicy
    from switchbert.data.retrieval import load_flickr_jsonl
    from switchbert.io import atomic_write, atomic_write_json

    policy = BadItemPolicy(skip_bad)
    images = load_flickr_jsonl(inputs, store, policy)
    captions = [(s, i) for i, im in enumerate(images) for s in im.sentences]
    scores = torch.empty(len(captions), len(images))
    pairs = [(c, i) for i in range(len(images)) for c in range(len(captions))]
    for idx in _batches(len(pairs), batch_size):
        part = [pairs[k] for k in idx]
        s = model.score([captions[c][0] for c, _ in part], image_ids=[images[i].image_id for _, i in part],
                        store=store)
        for (c, i), v in zip(part, s.tolist()):
            scores[c, i] = v
    name = inputs.stem
    atomic_write(out_dir / f"retrieval_scores_{name}.pt", lambda p: torch.save(scores, p))
    k = min(10, len(images))
    ranking = {
        "images": [im.image_id for im in images],
        "captions": [{"caption": text, "image_id": images[i].image_id,
                      "top_images": [images[j].image_id for j in scores[c].topk(k).indices.tolist()]}
                     for c, (text, i) in enumerate(captions)],
    }
    path = atomic_write_json(out_dir / f"retrieval_ranking_{name}.json", ranking)
    if policy.skipped:
        log.warning("--skip-bad dropped %d lines of %s (listed above)", policy.skipped, inputs)
    return path


def predict_refexp(model: Any, store: Any, inputs: Path, out_dir: Path, batch_size: int, skip_bad: bool) -> Path:
    from switchbert.data.errors import DataError
    from switchbert.io import atomic_write_json

    try:
        refs = json.loads(inputs.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(inputs, None, f"not JSON ({e.msg})") from None
    if not isinstance(refs, list):
        raise DataError(inputs, None, "expected a JSON list of {ref_id, image_id, sentence}")

    def problem(r: Any) -> Optional[str]:
        if not isinstance(r, dict) or not {"ref_id", "image_id", "sentence"} <= r.keys():
            return "needs ref_id, image_id and sentence"
        if not isinstance(r["sentence"], str) or not r["sentence"].strip():
            return "empty sentence"
        if str(r["image_id"]) not in store:
            return f"image {r['image_id']} is not in the feature store {store.path}"
        return None

    keep, dropped = _screen(refs, problem, inputs, skip_bad,
                            key=lambda i, r: r.get("ref_id") if isinstance(r, dict) else f"#{i}",
                            where=lambda i, r: f"item #{i}")
    results = []
    for idx in _batches(len(keep), batch_size):
        part = [keep[i] for i in idx]
        found = model.locate([r["sentence"] for r in part], image_ids=[r["image_id"] for r in part], store=store)
        results += [{"ref_id": r["ref_id"], "image_id": r["image_id"], "region": f.index, "box": list(f.box),
                     "score": f.score} for r, f in zip(part, found)]
    path = atomic_write_json(out_dir / f"refexp_results_{inputs.stem}.json", results)
    if dropped:
        log.warning("--skip-bad dropped %d of %d expressions of %s: %s", len(dropped), len(refs), inputs,
                    ", ".join(f"{q} ({why})" for q, why in dropped[:10]))
    return path


PREDICTORS = {"vqa": predict_vqa, "retrieval": predict_retrieval, "refexp": predict_refexp}


def run(args: argparse.Namespace) -> int:
    from switchbert.task_model import load_task_model

    run_dir, inputs = Path(args.run), Path(args.inputs)
    if not inputs.is_file():
        raise FileNotFoundError(f"{inputs}: no such input file")
    model = load_task_model(run_dir, args.device, task=args.task)
    store = _store(args, run_dir)
    base = run_dir if (run_dir / "config.yaml").is_file() else Path(model.source).parent
    out_dir = Path(args.out) if args.out else base / "predict"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = PREDICTORS[model.task](model, store, inputs, out_dir, args.batch_size, args.skip_bad)
    print(f"{model.task}: wrote {path} (model {model.source})")
    return 0


def register(subparsers: "argparse._SubParsersAction") -> None:
    """Adds ``predict`` to the ``switchbert`` command line."""
    p = subparsers.add_parser(
        "predict", help="a fine-tuned run on unannotated inputs: the evaluation server's files",
        description=__doc__.split("\n\n")[0] + " VQA: a questions JSON; retrieval: Flickr30k-format JSON lines; "
                    "refexp: a JSON list of {ref_id, image_id, sentence}.")
    p.add_argument("run", help="a fine-tuned run directory (its best/, else last/) or a checkpoint directory")
    p.add_argument("inputs", help="the input file (see above)")
    p.add_argument("--features", default=None, help="feature store (default: the run's data.features)")
    p.add_argument("--out", default=None, help="output directory (default: RUN/predict)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--task", default=None, choices=sorted(PREDICTORS), help="when the checkpoint does not say")
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-bad", action="store_true", help="drop bad inputs (named in the output) instead of stopping")
    p.set_defaults(func=run)
