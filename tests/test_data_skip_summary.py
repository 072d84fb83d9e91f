"""--skip-bad reporting: the first few items, then one count per reason at the end of each
pass and how much of the data was used; skips inside DataLoader workers are counted too."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from switchbert.data import CaptionPairsDataset, load_tokenizer, make_dataloader, open_feature_store, write_store
from switchbert.data.errors import MAX_LISTED, BadItemPolicy, DataError, DataWarning
from switchbert.data.features import RegionRecord


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


@pytest.fixture
def data(tmp_path):
    """40 images, every fourth without regions (bad for MRC), and captions for those plus 100 unknown ids."""
    rng = np.random.default_rng(0)
    recs = []
    for i in range(40):
        n = 0 if i % 4 == 0 else 3
        xy = rng.uniform(0, 50, (n, 2))
        recs.append(RegionRecord(str(i), rng.random((n, 8), dtype=np.float32),
                                 np.concatenate([xy, xy + 20], 1).astype(np.float32), 100, 100,
                                 rng.dirichlet(np.ones(5), n).astype(np.float32)))
    write_store(tmp_path / "f", recs, "fast")
    captions = {str(i): f"caption {i}" for i in range(40)}
    captions.update({f"x{i}": "an image we do not have" for i in range(100)})
    (tmp_path / "caption_train.json").write_text(json.dumps(captions))
    return tmp_path / "caption_train.json", open_feature_store(tmp_path / "f")


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, DataWarning)]


@pytest.mark.parametrize("workers", [0, 2])
def test_skips_are_listed_briefly_then_summarised_per_pass(data, tok, workers):
    captions, store = data
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = CaptionPairsDataset(captions, store, tok, itm_mismatch_prob=0.0, skip_bad=True)
        assert len(ds) == 40 and ds.policy.skipped == 100
        for epoch in range(2):
            ds.set_epoch(epoch)
            loader = make_dataloader(ds, 4, num_workers=workers)
            got = sum(batch.batch_size for batch, _ in loader)
            assert got == 30
    messages = _messages(record)
    listed = [m for m in messages if m.startswith("skipped bad item")]
    assert len(listed) == MAX_LISTED and "further bad items are counted" in listed[-1]
    build = [m for m in messages if "left out as bad" in m]
    assert build == [f"{captions}: 40 items used; 100 left out as bad when it was read (100 x missing image id)"]
    passes = [m for m in messages if "items skipped as bad" in m]
    assert passes == [f"{captions}, pass {k}: 10 of 40 items skipped as bad (10 x zero regions); 30 used"
                      for k in (1, 2)]
    assert len(messages) == MAX_LISTED + 1 + 2  # not one line per item (160 skips in all)
    assert ds.policy.counts["zero regions"] == 20 and ds.policy.counts["missing image id"] == 100


def test_partial_pass_is_summarised(data, tok):
    captions, store = data
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = CaptionPairsDataset(captions, store, tok, itm_mismatch_prob=0.0, skip_bad=True)
        it = iter(make_dataloader(ds, 4))
        next(it), next(it)  # a run stopped early (train.stop_after): two of ten batches
        it.close()
    assert f"{captions}, partial pass 1: 2 of 8 items skipped as bad (2 x zero regions); 6 used" in _messages(record)


def test_worker_data_error_comes_back_as_itself(data, tok):
    captions, store = data
    json_path = captions.parent / "ok.json"
    json_path.write_text(json.dumps({str(i): f"c {i}" for i in range(29, 33)}))
    ds = CaptionPairsDataset(json_path, store, tok, itm_mismatch_prob=0.0)
    with pytest.raises(DataError, match=r"item '32': zero regions"):
        for _ in make_dataloader(ds, 2, num_workers=1):
            pass


def test_policy_lists_only_the_first_few():
    policy = BadItemPolicy(skip_bad=True)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for i in range(1000):
            policy.handle(DataError("s.lmdb", str(i), f"missing image id {i}: not in the feature store"))
    assert len(record) == MAX_LISTED and policy.counts == {"missing image id": 1000}
    assert policy.summary() == "skipped 1000 bad items (1,000 x missing image id)"


def test_counted_batch_pins_what_it_carries():
    from switchbert.data.loader import _Counted

    class Pinnable:
        pinned = False

        def pin_memory(self):
            out = Pinnable()
            out.pinned = True
            return out

    got = _Counted((Pinnable(), Pinnable()), 2, 0).pin_memory()
    assert isinstance(got, _Counted) and all(v.pinned for v in got.value) and got.size == 2


def test_finetune_says_how_much_of_each_split_was_used(tmp_path):
    """A store missing most images: a few listed items and one line per split, not one per item."""
    import shutil

    from switchbert.commands.train import finetune_main
    from tests.test_train_support import QUIET, make_synth, synth_config

    root = make_synth(tmp_path / "synth")
    full = open_feature_store(root / "features.lmdb")
    keep = [full.get(i) for i in full.ids()[::4]]
    full.close()
    shutil.rmtree(root / "features.lmdb")
    write_store(root / "features.lmdb", keep, "fast")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rc = finetune_main([synth_config("vqa"), f"data.root={root}", f"output_dir={tmp_path / 'run'}",
                            "model.init_from=null", "data.skip_bad=true", "train.epochs=1", "train.max_steps=1", "train.batch_size=8",
                            *QUIET])
    assert rc == 0
    messages = _messages(record)
    listed = [m for m in messages if m.startswith("skipped bad item")]
    used = [m for m in messages if "items used;" in m]
    assert len(listed) <= 2 * MAX_LISTED  # train and val datasets: the first few of each
    assert len(used) == 2 and all("x missing image id" in m for m in used)
    assert "train2014_questions.json" in used[0] and "val2014_questions.json" in used[1]
    assert len(messages) == len(listed) + len(used)


def test_all_skipped_batch_in_a_worker_is_one_data_error(data, tok):
    captions, store = data
    json_path = captions.parent / "bad.json"
    json_path.write_text(json.dumps({"0": "a", "4": "b"}))  # both images have no region
    ds = CaptionPairsDataset(json_path, store, tok, itm_mismatch_prob=0.0, skip_bad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="every item of the batch was skipped as bad"):
            for _ in make_dataloader(ds, 2, num_workers=1):
                pass
