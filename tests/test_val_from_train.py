"""data.val_from_train: a held-out part of the training images to select the model on."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchbert import create_model
from switchbert.train.config import ConfigError, load_config
from switchbert.train.distributed import DistContext
from switchbert.train.tasks import HELDOUT, build_task, heldout_images
from tests.test_train_support import make_synth, synth_config

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synth(tmp_path_factory.mktemp("synth"))


def test_heldout_images_is_a_deterministic_order_free_fraction():
    ids = [f"img{i}" for i in range(200)]
    held = heldout_images(ids, 0.1, seed=0)
    assert len(held) == 20 and held <= set(ids)
    assert heldout_images(list(reversed(ids)) + ids[:5], 0.1, seed=0) == held  # order and repeats do not matter
    assert heldout_images(ids, 0.1, seed=1) != held  # the seed chooses
    assert heldout_images(ids, 0.0, seed=0) == set()
    assert len(heldout_images(ids[:2], 0.9, seed=0)) == 1  # always one left to train on
    with pytest.raises(ConfigError, match="at least 2"):
        heldout_images(["a"], 0.5, seed=0)


def _task(synth, tmp_path, name, *extra):
    config = load_config(synth_config(name), [f"data.root={synth}", "model.init_from=null", f"output_dir={tmp_path}",
                                             "data.val_from_train=0.25", *extra])
    return build_task(config, create_model("uniter-tiny").config, DistContext())


def test_vqa_heldout_is_disjoint_by_image_and_deterministic(synth, tmp_path):
    task = _task(synth, tmp_path, "vqa")
    assert task.val_split == HELDOUT
    train, held = task.train_dataset(), task.dataset(HELDOUT)
    from switchbert.data.vqa import load_questions

    questions = load_questions(task.config.data.path("vqa_train_questions"))
    image = {q["question_id"]: str(q["image_id"]) for q in questions}
    held_q = set(task.heldout_question_ids())
    rest_q = set(image) - held_q
    assert held_q and rest_q
    assert len(held) == len(held_q) and len(train) == len(rest_q)
    assert {image[q] for q in held_q}.isdisjoint({image[q] for q in rest_q})  # no image on both sides
    again = _task(synth, tmp_path, "vqa", "train.seed=5")  # another run seed: the same held-out set
    assert again.heldout_question_ids() == held_q


def test_retrieval_and_refexp_heldout_are_disjoint_and_deterministic(synth, tmp_path):
    import json

    task = _task(synth, tmp_path, "retrieval")
    train_file, held_file = task._train_file("train"), task._train_file(HELDOUT)
    ids = lambda p: [str(json.loads(ln)["id"]) for ln in p.read_text().splitlines() if ln.strip()]  # noqa: E731
    source = ids(task.config.data.path("flickr_train"))
    tr, he = ids(train_file), ids(held_file)
    assert tr and he and set(tr).isdisjoint(he) and sorted(tr + he) == sorted(source)
    assert len(task.train_dataset().images) == len(tr)

    ref = _task(synth, tmp_path, "refexp")
    train, held = ref.dataset("train"), ref.dataset(HELDOUT)
    full = len(ref.dataset("val").items)  # the real val is untouched
    assert full > 0
    t_img, h_img = {it[2] for it in train.items}, {it[2] for it in held.items}
    assert train.items and held.items and t_img.isdisjoint(h_img)
    assert [it[:2] for it in _task(synth, tmp_path, "refexp").dataset(HELDOUT).items] == [it[:2] for it in held.items]


def test_val_from_train_is_checked(synth, tmp_path):
    with pytest.raises(ConfigError, match="data.val_from_train"):
        _task(synth, tmp_path, "vqa", "data.val_from_train=1.0")
    plain = load_config(synth_config("vqa"), [f"data.root={synth}", "model.init_from=null", f"output_dir={tmp_path}"])
    task = build_task(plain, create_model("uniter-tiny").config, DistContext())
    assert task.val_split == "val"
    with pytest.raises(ConfigError, match="only with data.val_from_train"):
        task.dataset(HELDOUT)


def test_training_selects_on_the_heldout_images(synth, tmp_path, monkeypatch):
    from switchbert.cli import main
    from switchbert.train import tasks
    from tests.test_train_support import QUIET

    seen = []
    real = tasks.VQATask.evaluate

    def spy(self, model, heads, split, ectx):
        seen.append(split)
        return real(self, model, heads, split, ectx)

    monkeypatch.setattr(tasks.VQATask, "evaluate", spy)
    assert main(["finetune", synth_config("vqa"), f"data.root={synth}", "model.init_from=null",
                 f"output_dir={tmp_path / 'run'}", "data.val_from_train=0.25", "train.epochs=1", "train.max_steps=1",
                 "train.batch_size=4", *QUIET]) == 0
    assert seen and set(seen) == {HELDOUT}
