"""Cross-modal retrieval recall (R@1/5/10, image and text retrieval) over every pair of a split.

docs/method.md §7: score every (caption, image) pair of the test split (Flickr30k: 5,000 × 1,000). Image
retrieval (IR) ranks all images for each caption; text retrieval (TR) ranks all captions for each
image and takes the best-ranked of its ground-truth captions.

Ties are pessimistic: a negative that scores exactly as high as the ground truth ranks above it. So a
model whose scores are all equal gets R@K = 0 (unless K covers every candidate), never 100%, and
the result does not depend on the order of the candidates. Recalls are percentages (0-100).

Dimension legend
    Nc number of captions, Ni number of images
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

ArrayLike = Union[np.ndarray, Tensor, Sequence[float]]

RETRIEVAL_KS: tuple[int, ...] = (1, 5, 10)


def _as_numpy(x: ArrayLike, dtype: type) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _check_inputs(scores: ArrayLike, caption_to_image: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = _as_numpy(scores, np.float64)
    c2i = np.asarray(caption_to_image.detach().cpu() if isinstance(caption_to_image, Tensor) else caption_to_image)
    if c2i.size and c2i.dtype.kind not in "iu":
        raise ValueError(f"retrieval: caption_to_image must hold integer image indices, got dtype {c2i.dtype}")
    c2i = c2i.astype(np.int64)
    if s.ndim != 2:
        raise ValueError(f"retrieval: scores must be a (num_captions, num_images) matrix, got shape {s.shape}")
    num_captions, num_images = s.shape
    if c2i.shape != (num_captions,):
        raise ValueError(
            f"retrieval: caption_to_image must have one image index per caption row of scores, i.e. shape "
            f"({num_captions},), got {c2i.shape}"
        )
    if num_captions == 0 or num_images == 0:
        raise ValueError(f"retrieval: empty score matrix {s.shape}")
    if c2i.min() < 0 or c2i.max() >= num_images:
        raise ValueError(
            f"retrieval: caption_to_image holds image indices in [{c2i.min()}, {c2i.max()}], "
            f"but scores has {num_images} image columns"
        )
    if np.isnan(s).any():
        raise ValueError(f"retrieval: scores contain {int(np.isnan(s).sum())} NaN values")
    return s, c2i


def retrieval_ranks(scores: ArrayLike, caption_to_image: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """0-based rank of the ground truth in both directions (0 = retrieved first).

    Args:
        scores: (Nc, Ni) score of every (caption, image) pair; higher = better match.
        caption_to_image: (Nc,) index of each caption's image (a column of ``scores``).

    Returns:
        ir_ranks (Nc,): for each caption, the number of OTHER images scoring >= its own image.
        tr_ranks (Ni,): for each image, the number of captions that are not its own and score >=
        its best own caption; -1 for an image without any caption (excluded from TR recall).
    """
    s, c2i = _check_inputs(scores, caption_to_image)
    num_captions, num_images = s.shape
    rows = np.arange(num_captions)
    gt = s[rows, c2i]  # (Nc,) each caption's score with its own image

    # IR: the ground-truth image itself always satisfies >=, hence the -1.
    ir_ranks = (s >= gt[:, None]).sum(axis=1) - 1

    # TR: best own-caption score per image, then count captions reaching it minus own ones doing so.
    best = np.full(num_images, -np.inf)
    np.maximum.at(best, c2i, gt)
    reaching = (s >= best[None, :]).sum(axis=0)  # (Ni,) all captions with score >= best own
    own_reaching = np.bincount(c2i, weights=(gt >= best[c2i]), minlength=num_images).astype(np.int64)
    has_caption = np.bincount(c2i, minlength=num_images) > 0
    tr_ranks = np.where(has_caption, reaching - own_reaching, -1)
    return ir_ranks.astype(np.int64), tr_ranks.astype(np.int64)


def retrieval_recall(
    scores: ArrayLike, caption_to_image: ArrayLike, ks: Sequence[int] = RETRIEVAL_KS
) -> dict[str, float]:
    """Recall@K in percent for image retrieval (``ir_r{K}``) and text retrieval (``tr_r{K}``).

    Args:
        scores: (Nc, Ni) scores of all pairs, e.g. from ``score_all_pairs``.
        caption_to_image: (Nc,) image index of each caption.
        ks: the cut-offs.

    Returns:
        e.g. ``{"ir_r1": 62.2, "ir_r5": ..., "ir_r10": ..., "tr_r1": 78.2, ...}``. Images without a
        caption are left out of TR.
    """
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"retrieval_recall: ks must be positive integers, got {list(ks)}")
    ir_ranks, tr_ranks = retrieval_ranks(scores, caption_to_image)
    tr_ranks = tr_ranks[tr_ranks >= 0]
    out: dict[str, float] = {}
    for k in ks:
        out[f"ir_r{int(k)}"] = 100.0 * float((ir_ranks < k).mean())
    for k in ks:
        out[f"tr_r{int(k)}"] = 100.0 * float((tr_ranks < k).mean())
    return out


def score_all_pairs(
    score_fn: Callable[[Tensor, Tensor], Tensor],
    num_captions: int,
    num_images: int,
    batch_size: int,
    progress: bool = True,
    desc: str = "scoring caption-image pairs",
) -> Tensor:
    """Fills the (Nc, Ni) score matrix by calling ``score_fn`` on chunks of ``batch_size`` pairs.

    Pairs go caption-major (all images of caption 0, then caption 1, ...), so consecutive calls
    share captions, which lets a caller cache text-side work. This helper knows nothing about
    models: the callable does the forward pass (and moves indices to its device). It runs under
    ``torch.no_grad()``.

    Args:
        score_fn: ``score_fn(caption_idx, image_idx) -> scores`` with two (n,) long CPU tensors;
            returns (n,) or (n, 1) scores.
        num_captions: Nc.
        num_images: Ni.
        batch_size: pairs per call.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.

    Returns:
        (Nc, Ni) float32 CPU tensor.
    """
    for name, value in (("num_captions", num_captions), ("num_images", num_images), ("batch_size", batch_size)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"score_all_pairs: {name} must be a positive integer, got {value!r}")
    total = num_captions * num_images
    out = torch.empty(total, dtype=torch.float32)
    with torch.no_grad(), tqdm(total=total, desc=desc, unit="pair", disable=not progress) as bar:
        for start in range(0, total, batch_size):
            flat = torch.arange(start, min(start + batch_size, total), dtype=torch.long)
            caption_idx, image_idx = flat // num_images, flat % num_images
            chunk = torch.as_tensor(score_fn(caption_idx, image_idx))
            if chunk.dim() == 2 and chunk.shape[1] == 1:
                chunk = chunk.squeeze(1)
            if tuple(chunk.shape) != (flat.numel(),):
                raise ValueError(
                    f"score_all_pairs: score_fn returned shape {tuple(chunk.shape)} for {flat.numel()} pairs; "
                    f"expected ({flat.numel()},) or ({flat.numel()}, 1)"
                )
            out[start : start + flat.numel()] = chunk.detach().float().cpu()
            bar.update(flat.numel())
    return out.view(num_captions, num_images)
