"""Flickr30k image-text retrieval: 4-way cross-entropy over hard negatives; R@1/5/10 in both
directions over every (caption, image) pair of a split (docs/method.md §7).

Dimension legend: B batch, K = 4 candidates per caption.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from switchbert.data import RetrievalEvalDataset, RetrievalTrainDataset
from switchbert.data.retrieval import iter_pair_batches
from switchbert.heads import build_head
from switchbert.heads.losses import retrieval_4way_loss
from switchbert.metrics import retrieval_recall
from switchbert.models.base import VLModel
from switchbert.train.config import ConfigError
from switchbert.train.distributed import all_gather_objects, shard_range
from switchbert.train.tasks.base import HELDOUT, StepOutput, Task, heldout_images


class RetrievalTask(Task):
    """Flickr30k (docs/method.md §7): 4-way training; evaluation scores every (caption, image) pair of a split."""

    name = "retrieval"
    metric_names = ("ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "r_mean")
    default_best = "r_mean"
    test_splits = ("test",)
    required_files = ("features", "flickr_train", "flickr_val", "flickr_test")
    text_len = 30

    def train_dataset(self) -> Dataset:
        d = self.config.data
        # Every process needs the hard-negative pool; only rank 0 caches it (in the run, not the data).
        cache = Path(self.config.output_dir) / "cache" / "hardneg_train.npz" if self.ctx.is_main else None
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
        return RetrievalTrainDataset(self._train_file("train"), self.store, self.tokenizer, d.max_text_len, d.max_regions,
                                     seed=self.config.train.seed, hard_k=d.hard_negatives_k, cache_path=cache,
                                     skip_bad=d.skip_bad)

    def build_heads(self, model: VLModel) -> nn.Module:
        c = model.config
        return build_head("retrieval", pooler_size=c.pooler_size, initializer_range=c.initializer_range,
                          dropout=c.hidden_dropout)

    def step(self, model, heads, batch, labels) -> StepOutput:
        if self.config.train.retrieval_shared_noise:
            # Rows are consecutive groups of num_candidates pairs (one caption's candidates).
            k = labels.num_candidates
            batch = replace(batch, noise_group=torch.arange(batch.batch_size, device=batch.text_ids.device) // k * k)
        output = model(batch, validate=False)
        loss = retrieval_4way_loss(heads(output), labels.num_candidates)
        return StepOutput(loss, {}, output.routes)

    def _train_file(self, part: str) -> Path:
        """``data.flickr_train``, or with ``data.val_from_train`` the file of its training or held-out
        images (``part``), written once into the run's cache directory."""
        d = self.config.data
        if d.val_from_train <= 0:
            return d.path("flickr_train")
        import json

        from switchbert.io import atomic_write_text

        source = d.path("flickr_train")
        lines = [ln for ln in source.read_text(encoding="utf-8").splitlines() if ln.strip()]
        try:
            ids = [str(json.loads(ln)["id"]) for ln in lines]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{source}: data.val_from_train needs an 'id' on every line ({e})") from None
        held = heldout_images(ids, d.val_from_train, d.val_from_train_seed)
        keep = [ln for ln, i in zip(lines, ids) if (i in held) == (part == HELDOUT)]
        path = Path(self.config.output_dir) / "cache" / f"flickr_{part}_val_from_train.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "\n".join(keep) + "\n")
        return path

    def split_files(self, split: str) -> tuple[str, ...]:
        key = {"train": "flickr_train", "val": "flickr_val", "test": "flickr_test", HELDOUT: "flickr_train"}.get(split)
        if key is None:
            raise ConfigError(f"unknown retrieval split {split!r}; choose train, val, test or {HELDOUT} "
                              "(with data.val_from_train)")
        return (key,)

    def dataset(self, split: str) -> RetrievalEvalDataset:
        """Every (caption, image) pair of ``split``: pair ``image * num_captions + caption``."""
        (key,) = self.split_files(split)
        self._check_heldout(split)
        d = self.config.data
        path = self._train_file(split) if split in ("train", HELDOUT) else d.path(key)
        return RetrievalEvalDataset(path, self.store, self.tokenizer, d.max_text_len, d.max_regions)

    def analysis_dataset(self, split: str) -> Dataset:
        """Each caption with its own image (the matching pairs), image-major so regions are read once per image."""
        ds = self.dataset(split)
        order = np.argsort(ds.caption_image, kind="stable")
        return Subset(ds, [int(ds.caption_image[c]) * ds.num_captions + int(c) for c in order])

    def evaluate(self, model, heads, split, ectx) -> dict[str, float]:
        dataset = self.dataset(split)
        n_img = dataset.num_images if ectx.max_images <= 0 else min(ectx.max_images, dataset.num_images)
        caption_image = dataset.caption_image
        n_cap = int((caption_image < n_img).sum())  # captions are stored image by image
        # Pairs are image-major (index = image * num_captions + caption) so a run of pairs shares regions.
        indices = [i * dataset.num_captions + c for i in range(n_img) for c in range(n_cap)]
        # This process's contiguous share, built on the device from each image's regions read once and
        # the captions tokenised once (iter_pair_batches), not decoded and copied per pair.
        mine = [indices[i] for i in shard_range(len(indices), ectx.dist)]
        batches = tqdm(iter_pair_batches(dataset, mine, ectx.batch_size, ectx.dist.device),
                       total=-(-len(mine) // ectx.batch_size), desc=f"retrieval {split} pairs", unit="batch",
                       disable=not (ectx.progress and ectx.dist.is_main), leave=False)
        parts: list[Tensor] = []
        with torch.no_grad(), ectx.autocast():
            for batch, labels in batches:
                scores = heads(model(batch)).float().cpu()
                parts.append(torch.stack([labels.caption_index.cpu().double(), labels.image_index.cpu().double(),
                                          scores.double()], dim=1))
        local = torch.cat(parts) if parts else torch.zeros(0, 3, dtype=torch.float64)
        rows = torch.cat(all_gather_objects(local, ectx.dist))
        matrix = torch.full((n_cap, n_img), float("nan"), dtype=torch.float32)
        matrix[rows[:, 0].long(), rows[:, 1].long()] = rows[:, 2].float()
        if ectx.out_dir is not None and ectx.dist.is_main:
            torch.save(matrix, Path(ectx.out_dir) / f"retrieval_scores_{split}.pt")
        metrics = retrieval_recall(matrix, caption_image[:n_cap])
        metrics["r_mean"] = float(np.mean(list(metrics.values())))
        return metrics
