"""Flickr30k image-text retrieval (docs/method.md §7): 4-way training tuples and all-pairs evaluation.

Input: JSON lines, one image a line: ``{"id", "sentences": [5 captions], "img_path"}``.

Dimension legend: B samples, K = 4 candidates per training sample, T text tokens (<= 30),
N regions (<= 36), F feature size.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from switchbert.batch import Batch
from switchbert.data.errors import BadItemPolicy, DataError, DataWarning, PathLike
from switchbert.data.features import FeatureStore, read_regions
from switchbert.data.loader import TensorFields, drop_skipped, make_batch, pad_regions, pad_text
from switchbert.data.masking import sample_rng
from switchbert.data.regions import Regions
from switchbert.data.tokenizer import encode_batch

NUM_CANDIDATES = 4
CANDIDATES = ("positive", "random_caption", "random_image", "hard_caption")
"""Order of the 4 pairs of a training sample; the positive is candidate 0."""


@dataclass
class FlickrImage:
    image_id: str
    sentences: list[str]
    img_path: str = ""


def load_flickr_jsonl(path: PathLike, store: Optional[FeatureStore] = None,
                      policy: Optional[BadItemPolicy] = None) -> list[FlickrImage]:
    """Reads a Flickr30k split; a malformed line, an empty caption, an image on a second line (it would
    be a second retrieval candidate and silently change R@K) or (with ``store``) an image missing from
    the store raises DataError naming the file and line, unless ``policy`` skips it."""
    policy = policy or BadItemPolicy()
    out: list[FlickrImage] = []
    first_line: dict[str, int] = {}
    try:
        fh = open(path, "r", encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(path, None, "file not found") from exc
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(path, f"line {lineno}", f"malformed JSON line: {exc.msg}") from exc
                if not isinstance(obj, dict) or "id" not in obj or not isinstance(obj.get("sentences"), list):
                    raise DataError(path, f"line {lineno}", "a line needs 'id' and a 'sentences' list")
                iid = str(obj["id"])
                if iid in first_line:
                    raise DataError(path, f"line {lineno} (image {iid})",
                                    f"image repeated (first on line {first_line[iid]}): each image must appear once")
                sents = obj["sentences"]
                if not sents:
                    raise DataError(path, f"line {lineno} (image {iid})", "no captions")
                for k, s in enumerate(sents):
                    if not isinstance(s, str):
                        raise DataError(path, f"line {lineno} (image {iid}) caption {k}",
                                        f"caption is not a string ({type(s).__name__})")
                    if not s.strip():
                        raise DataError(path, f"line {lineno} (image {iid}) caption {k}", "empty caption")
                if out and len(sents) != len(out[0].sentences):  # every image is judged on as many captions
                    raise DataError(path, f"line {lineno} (image {iid})",
                                    f"{len(sents)} captions, but line {first_line[out[0].image_id]} has "
                                    f"{len(out[0].sentences)}: every image needs the same number (Flickr30k: 5)")
                if store is not None and iid not in store:
                    raise DataError(path, f"line {lineno} (image {iid})", f"missing image id: not in the feature store {store.path}")
            except DataError as err:
                policy.handle(err)
                continue
            first_line[iid] = lineno
            out.append(FlickrImage(iid, list(sents), str(obj.get("img_path", ""))))
    if not out:
        raise DataError(path, None, "no usable image")
    return out


def mean_region_features(store: FeatureStore, image_ids: list[str], max_regions: int = 36) -> np.ndarray:
    """(n_images, F) float32 mean of each image's (at most ``max_regions``) region features."""
    out = np.zeros((len(image_ids), store.feat_dim or 0), dtype=np.float32)
    for i, iid in enumerate(image_ids):
        f = store.get(iid).features[:max_regions]
        if len(f):
            out[i] = f.mean(axis=0)
    return out


def nearest_neighbours(vectors: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """(n, k) int64 indices of each row's k most cosine-similar other rows, most similar first."""
    n = vectors.shape[0]
    k = min(k, n - 1)
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        sim = v[start:start + chunk] @ v.T  # (chunk, n)
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf  # never one's own neighbour
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n else np.argsort(-sim, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def hard_negative_pool(store: FeatureStore, image_ids: list[str], k: int = 20,
                       cache_path: Optional[PathLike] = None) -> np.ndarray:
    """Each image's k nearest neighbours by mean-pooled region features (docs/method.md §7), cached on disk.

    The pool is fixed before training: the cosine similarity of the images' mean region features
    (detector output), not the model's scores, so it does not change as the model learns. [ours]
    VOLTA reads a precomputed pool from its data file ``hard_negative.pkl``; ours is computed from the
    features given, so it can be rebuilt from them.

    The cache (``.npz``) stores a fingerprint of the store path and image ids and is recomputed when
    it does not match, so a stale cache is never used.
    """
    fingerprint = hashlib.sha1(("\n".join(image_ids) + f"|{k}|{store.feat_dim}").encode()).hexdigest()
    if cache_path is not None and Path(cache_path).exists():
        try:
            with np.load(cache_path) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return z["neighbours"]
        except (OSError, KeyError, ValueError):
            pass  # unreadable cache: recompute below
    neighbours = nearest_neighbours(mean_region_features(store, image_ids), k)
    if cache_path is not None:
        try:
            np.savez(cache_path, fingerprint=np.array(fingerprint), neighbours=neighbours)
        except OSError as exc:
            warnings.warn(f"could not write the hard-negative cache {cache_path}: {exc}", DataWarning, stacklevel=2)
    return neighbours


@dataclass
class RetrievalExample:
    """One training sample: 4 (caption, image) pairs in the order of ``CANDIDATES``.

    Attributes:
        text_ids: 4 (T_k,) int64 captions.
        regions: 4 images' regions.
        image_id: the positive image.
        caption_index: the sample's caption (index into the split's captions).
        pair_captions, pair_images: the 4 pairs as (caption index, image index) into the split.
    """

    text_ids: list[np.ndarray]
    regions: list[Regions]
    image_id: str
    caption_index: int
    pair_captions: tuple[int, int, int, int] = (0, 0, 0, 0)
    pair_images: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class RetrievalLabels(TensorFields):
    """Targets of the 4-way softmax.

    The batch has B*4 rows, sample-major: row 4*b + k is candidate k of sample b. Reshape the model's
    (B*4,) scores to (B, 4) and use cross entropy against ``targets`` (always 0, the positive).

    Attributes:
        targets: (B,) long index of the positive candidate.
        caption_index: (B,) long the sample's caption (index into the split's captions).
        image_ids: the B positive image ids.
    """

    targets: Tensor
    caption_index: Tensor
    num_candidates: int = NUM_CANDIDATES
    image_ids: list[str] = field(default_factory=list)


class _FlickrSplit(Dataset):
    def __init__(self, jsonl_path: PathLike, store: FeatureStore, tokenizer, max_text_len: int,
                 max_regions: int, skip_bad: bool) -> None:
        self.path, self.store, self.max_regions = str(jsonl_path), store, max_regions
        self.policy = BadItemPolicy(skip_bad)
        self.images = load_flickr_jsonl(jsonl_path, store, self.policy)
        self.image_ids = [im.image_id for im in self.images]
        captions = [s for im in self.images for s in im.sentences]
        self.caption_image = np.array([i for i, im in enumerate(self.images) for _ in im.sentences], dtype=np.int64)
        """(n_captions,) index of the image each caption describes."""
        self.captions = [np.asarray(t, dtype=np.int64) for t in encode_batch(tokenizer, captions, max_text_len)]
        self.captions_of_image: list[np.ndarray] = [np.flatnonzero(self.caption_image == i)
                                                    for i in range(len(self.images))]

    def _regions(self, image_index: int) -> Regions:
        # retrieval does not use the detector's class distribution: not read, not copied
        return read_regions(self.store, self.image_ids[image_index], self.max_regions, cls_prob=False)


class RetrievalTrainDataset(_FlickrSplit):
    """One sample per training caption, with its 4 candidates (docs/method.md §7):
    positive, random caption (of another image), random image, hard-negative caption (from one of the
    image's nearest neighbours by mean region features).

    Args:
        hard_k: size of each image's hard-negative pool.
        cache_path: where to cache the pool (default: ``<jsonl>.hardneg.npz`` next to the split).
    """

    def __init__(self, jsonl_path: PathLike, store: FeatureStore, tokenizer, max_text_len: int = 30,
                 max_regions: int = 36, seed: int = 0, hard_k: int = 20,
                 cache_path: Optional[PathLike] = "auto", skip_bad: bool = False) -> None:
        super().__init__(jsonl_path, store, tokenizer, max_text_len, max_regions, skip_bad)
        if len(self.images) < 2:
            raise DataError(jsonl_path, None, "retrieval training needs at least 2 images (for negatives)")
        self.seed, self.epoch = seed, 0
        if cache_path == "auto":
            cache_path = str(jsonl_path) + ".hardneg.npz"
        self.hard_pool = hard_negative_pool(store, self.image_ids, hard_k, cache_path)
        """(n_images, k) nearest-neighbour image indices."""

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.captions)

    def _other(self, rng: np.random.Generator, image: int) -> int:
        j = int(rng.integers(0, len(self.images) - 1))
        return j + 1 if j >= image else j

    def __getitem__(self, index: int) -> Optional[RetrievalExample]:
        rng = sample_rng(self.seed, self.epoch, index)
        img = int(self.caption_image[index])
        rand_cap = int(rng.choice(self.captions_of_image[self._other(rng, img)]))
        rand_img = self._other(rng, img)
        hard_img = int(rng.choice(self.hard_pool[img]))
        hard_cap = int(rng.choice(self.captions_of_image[hard_img]))
        try:
            own, other = self._regions(img), self._regions(rand_img)
        except DataError as err:
            self.policy.handle(err)
            return None
        texts = [self.captions[index], self.captions[rand_cap], self.captions[index], self.captions[hard_cap]]
        return RetrievalExample(texts, [own, own, other, own], self.image_ids[img], index,
                                (index, rand_cap, index, hard_cap), (img, img, rand_img, img))

    def collate(self, examples: list[Optional[RetrievalExample]]) -> tuple[Batch, RetrievalLabels]:
        examples = drop_skipped(examples)
        if not examples:
            raise DataError(self.path, None, "every item of the batch was skipped as bad")
        batch, _ = make_batch([t for e in examples for t in e.text_ids], [r for e in examples for r in e.regions])
        labels = RetrievalLabels(
            targets=torch.zeros(len(examples), dtype=torch.long),
            caption_index=torch.tensor([e.caption_index for e in examples], dtype=torch.long),
            image_ids=[e.image_id for e in examples],
        )
        return batch, labels


@dataclass
class RetrievalPair:
    text_ids: np.ndarray
    regions: Regions
    caption_index: int
    image_index: int


@dataclass
class RetrievalEvalLabels(TensorFields):
    """Which (caption, image) pair each row is; fill a (n_captions, n_images) score matrix with them.

    Attributes:
        caption_index: (B,) long.
        image_index: (B,) long.
    """

    caption_index: Tensor
    image_index: Tensor


class RetrievalEvalDataset(_FlickrSplit):
    """Every (caption, image) pair of a split (5,000 x 1,000 for Flickr30k test), image-major so that
    consecutive pairs share an image and its regions are read once per run of captions.

    ``caption_image[c]`` is the ground-truth image of caption c; with the score matrix S (captions x
    images), image retrieval ranks S[c] and text retrieval ranks S[:, i] (docs/method.md §7).
    """

    def __init__(self, jsonl_path: PathLike, store: FeatureStore, tokenizer, max_text_len: int = 30,
                 max_regions: int = 36, skip_bad: bool = False) -> None:
        super().__init__(jsonl_path, store, tokenizer, max_text_len, max_regions, skip_bad)
        self._cached: tuple[int, Optional[Regions]] = (-1, None)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    @property
    def num_images(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return self.num_captions * self.num_images

    def __getitem__(self, index: int) -> RetrievalPair:
        img, cap = divmod(int(index), self.num_captions)
        if self._cached[0] != img:
            # No skipping here: dropping a pair would silently change the recall denominator.
            self._cached = (img, self._regions(img))
        return RetrievalPair(self.captions[cap], self._cached[1], cap, img)

    def collate(self, examples: list[RetrievalPair]) -> tuple[Batch, RetrievalEvalLabels]:
        batch, _ = make_batch([e.text_ids for e in examples], [e.regions for e in examples])
        return batch, RetrievalEvalLabels(torch.tensor([e.caption_index for e in examples], dtype=torch.long),
                                          torch.tensor([e.image_index for e in examples], dtype=torch.long))


def iter_pair_batches(dataset: RetrievalEvalDataset, pairs: Sequence[int], batch_size: int,
                      device: torch.device | str = "cpu") -> Iterator[tuple[Batch, RetrievalEvalLabels]]:
    """The pairs ``pairs`` (indices ``image * num_captions + caption``) in batches, built on ``device``.

    What the DataLoader path did per pair (decode the image's regions, copy its 36 x 2048 features
    into the batch, copy the batch to the device) is done once per image here: the captions are
    padded into one (n_captions, T) tensor and each image's regions read once and moved to the device
    once; a batch is then an ``index_select`` of both on the device (a broadcast view of the image
    when the whole batch pairs one image with many captions). For Flickr30k test (5,000 x 1,000)
    that is 1,000 image reads instead of 5M row copies (BENCHMARKS.md, "Retrieval evaluation").

    Each batch is padded to its own longest caption and most regions, as ``make_batch`` does, so the
    model sees exactly the batches of ``make_dataloader(dataset, batch_size, sampler=pairs)`` (with
    float16 features already widened to float32, which the model does first anyway).

    Args:
        dataset: the split's pairs.
        pairs: (P,) pair indices; image-major order keeps few images in memory at a time.
        batch_size: pairs per batch.
        device: where the batches are built.

    Yields:
        (Batch, RetrievalEvalLabels) on ``device``.
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    n_cap = dataset.num_captions
    cap_len = np.array([len(t) for t in dataset.captions], dtype=np.int64)
    text_ids, text_mask = pad_text(dataset.captions)
    text_ids, text_mask = text_ids.to(device), text_mask.to(device)
    images: dict[int, tuple[Tensor, Tensor, Tensor, int]] = {}  # image -> feats, boxes, mask, regions
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        img, cap = np.divmod(chunk, n_cap)
        wanted = np.unique(img)
        for stale in [i for i in images if i not in set(wanted.tolist())]:
            del images[stale]  # image-major order: an image once left is not needed again
        for i in wanted.tolist():
            if i not in images:
                feats, boxes, mask, _ = pad_regions([dataset._regions(i)])
                # Widened once per image on the device: the model would widen float16 once per pair.
                images[i] = (feats.to(device).float(), boxes.to(device), mask.to(device), int(mask.sum()))
        T = int(cap_len[cap].max())
        N = max(images[i][3] for i in wanted.tolist())
        slot = {i: k for k, i in enumerate(wanted.tolist())}
        # (U, N, F) for the batch's U distinct images, then one gather to the batch's rows on the device
        feats = torch.stack([_pad_rows(images[i][0][0], N) for i in wanted.tolist()])
        boxes = torch.stack([_pad_rows(images[i][1][0], N) for i in wanted.tolist()])
        rmask = torch.stack([_pad_rows(images[i][2][0], N) for i in wanted.tolist()])
        capt = torch.as_tensor(cap, dtype=torch.long).to(device)
        if len(wanted) == 1:  # the usual case (image-major, 5 captions per image): a view, no copy
            B = len(chunk)
            feats, boxes, rmask = feats.expand(B, -1, -1), boxes.expand(B, -1, -1), rmask.expand(B, -1)
        else:
            rows = torch.as_tensor(np.array([slot[i] for i in img.tolist()]), dtype=torch.long).to(device)
            feats, boxes, rmask = feats.index_select(0, rows), boxes.index_select(0, rows), rmask.index_select(0, rows)
        batch = Batch(text_ids.index_select(0, capt)[:, :T], text_mask.index_select(0, capt)[:, :T], feats, boxes,
                      rmask)
        labels = RetrievalEvalLabels(torch.as_tensor(cap, dtype=torch.long).to(device),
                                     torch.as_tensor(img, dtype=torch.long).to(device))
        yield batch, labels


def _pad_rows(x: Tensor, n: int) -> Tensor:
    """(m, ...) -> (n, ...) with zero rows appended (or the first n rows)."""
    if x.shape[0] >= n:
        return x[:n]
    return torch.cat([x, x.new_zeros((n - x.shape[0], *x.shape[1:]))])
