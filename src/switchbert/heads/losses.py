"""Losses of pretraining (docs/method.md §6) and fine-tuning (docs/method.md §7), as plain functions of logits and labels.

Every loss is computed in at least float32 (the logits are upcast), so bf16/fp16 training does not
lose the loss's precision. A loss with nothing to average over (no MLM target, no MRC target, no
valid region) is an exact 0 that stays connected to the graph, never a NaN. That comes from the math
(a sum over the targets divided by max(count, 1)), not from a Python branch on the data: a branch like
``if mask.any()`` makes the host wait for the GPU, every step.

Dimension legend
    B  batch size, T text tokens, N real regions, V vocabulary, C detector classes, A answers
    K  selected rows (masked tokens or target regions, gathered)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from switchbert.heads.pretrain import IGNORE_INDEX, PretrainLogits, flat_index, gather_rows

ITM_MATCHED = 1
"""ITM label of a matching (image, caption) pair; 0 = the caption was replaced by another one."""

RETRIEVAL_NUM_OPTIONS = 4
"""4-way retrieval: positive, random caption, random image, hard-negative caption (docs/method.md §7)."""


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (with a zero gradient) where nothing is selected.

    ``where`` rather than a product, so a non-finite value at an unselected position cannot leak in.
    """
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp(min=1).to(total.dtype)


def mlm_loss(logits: Tensor, labels: Tensor, denominator: Optional[Tensor] = None) -> Tensor:
    """Masked language modelling cross-entropy, mean over the targets.

    Args:
        logits: (B, T, V) full logits or (K, V) logits gathered at the targets.
        labels: (B, T) or (K,) long token ids; -100 marks a position that is not a target.
        denominator: 0-d, what the summed loss is divided by instead of this batch's target count
            (DDP: ``train.distributed.global_count_denominator``, for a mean over the global batch).

    Returns:
        scalar loss; 0 when there is no target.
    """
    if logits.dim() < 2 or tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"mlm_loss: labels must have the logits' shape without the vocabulary dimension, "
            f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}"
        )
    logits2d, labels1d = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    # The sum over no target is 0, so the division by max(count, 1) gives 0 with no branch.
    total = F.cross_entropy(_upcast(logits2d), labels1d, ignore_index=IGNORE_INDEX, reduction="sum")
    if denominator is not None:
        return total / denominator.to(total.dtype)
    return total / mlm_target_count(labels).clamp(min=1).to(total.dtype)


def mlm_target_count(labels: Tensor) -> Tensor:
    """0-d long: the MLM targets among ``labels`` (positions not -100)."""
    return (labels != IGNORE_INDEX).sum()


def mrc_kl_loss(logits: Tensor, target_probs: Tensor, target_mask: Optional[Tensor] = None,
                denominator: Optional[Tensor] = None) -> Tensor:
    """MRC-KL: KL(detector ‖ prediction) = Σ_c p_c (log p_c − log q_c), mean over target regions.

    Classes with p_c = 0 contribute exactly 0 (0·log 0 = 0), even where log q_c underflows.

    Args:
        logits: (B, N, C) full or (K, C) gathered class logits (the prediction q = softmax).
        target_probs: the detector's class distribution p, same shape as ``logits``.
        target_mask: (B, N) bool (True = target region) with full logits; None = every row is a
            target (use it with gathered logits).
        denominator: 0-d, divides the summed loss instead of this batch's target count (see ``mlm_loss``).

    Returns:
        scalar loss: summed over classes, averaged over all target regions of the batch; images
        without a target contribute nothing; 0 when the batch has no target.
    """
    if tuple(target_probs.shape) != tuple(logits.shape):
        raise ValueError(
            f"mrc_kl_loss: target_probs must match logits' shape {tuple(logits.shape)}, "
            f"got {tuple(target_probs.shape)}"
        )
    if target_mask is not None:
        if tuple(target_mask.shape) != tuple(logits.shape[:-1]) or target_mask.dtype != torch.bool:
            raise ValueError(
                f"mrc_kl_loss: target_mask must be a bool tensor of shape {tuple(logits.shape[:-1])}, "
                f"got {target_mask.dtype} {tuple(target_mask.shape)}"
            )
    log_q = F.log_softmax(_upcast(logits), dim=-1)
    p = _upcast(target_probs).to(log_q.dtype)
    positive = p > 0
    # where() rather than kl_div: kl_div computes 0 * log q, which is NaN where log q = -inf.
    log_p = torch.log(torch.where(positive, p, torch.ones_like(p)))
    per_class = torch.where(positive, p * (log_p - log_q), torch.zeros_like(p))
    per_region = per_class.sum(-1)  # (B, N) or (K,)
    if denominator is not None:
        if target_mask is not None:
            per_region = torch.where(target_mask, per_region, torch.zeros_like(per_region))
        return per_region.sum() / denominator.to(per_region.dtype)
    if target_mask is not None:
        # Full logits: average the target regions without gathering them (x[mask] syncs on a GPU).
        return _masked_mean(per_region, target_mask)
    # Gathered rows are all targets; K is a shape, known on the host, so max(K, 1) costs no sync.
    return per_region.sum() / max(per_region.shape[0], 1)


def itm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Image-text matching cross-entropy.

    Args:
        logits: (B, 2).
        labels: (B,) long, 1 = matched pair (``ITM_MATCHED``), 0 = mismatched.
    """
    if logits.dim() != 2 or logits.shape[1] != 2 or tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(
            f"itm_loss: expects logits (B, 2) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    return F.cross_entropy(_upcast(logits), labels.long())


def ignore_mismatched(
    itm_labels: Tensor,
    mlm_labels: Optional[Tensor] = None,
    mrc_target_mask: Optional[Tensor] = None,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Drops the MLM and MRC targets of mismatched pairs (docs/method.md §6: their labels are ignored).

    Call it before ``PretrainHeads`` so gathered logits skip those samples. Idempotent: labels the
    data layer already blanked stay blank.

    Args:
        itm_labels: (B,) long, 1 = matched.
        mlm_labels: optional (B, T) long MLM labels.
        mrc_target_mask: optional (B, N) bool MRC targets.

    Returns:
        (mlm_labels, mrc_target_mask) with the rows of mismatched samples set to -100 / False.
    """
    matched = itm_labels == ITM_MATCHED  # (B,)
    new_mlm = new_mrc = None
    if mlm_labels is not None:
        if mlm_labels.dim() != 2 or mlm_labels.shape[0] != matched.shape[0]:
            raise ValueError(f"mlm_labels must be (B={matched.shape[0]}, T), got {tuple(mlm_labels.shape)}")
        new_mlm = torch.where(matched[:, None], mlm_labels, torch.full_like(mlm_labels, IGNORE_INDEX))
    if mrc_target_mask is not None:
        if mrc_target_mask.dim() != 2 or mrc_target_mask.shape[0] != matched.shape[0]:
            raise ValueError(
                f"mrc_target_mask must be (B={matched.shape[0]}, N), got {tuple(mrc_target_mask.shape)}"
            )
        new_mrc = mrc_target_mask & matched[:, None]
    return new_mlm, new_mrc


@dataclass
class PretrainLoss:
    """The weighted total and its (unweighted) parts, each a scalar tensor."""

    total: Tensor
    mlm: Tensor
    mrc: Tensor
    itm: Tensor

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats for logging."""
        parts = {"loss": self.total, "mlm": self.mlm, "mrc": self.mrc, "itm": self.itm}
        return {name: float(value.detach()) for name, value in parts.items()}


def pretrain_loss(
    logits: PretrainLogits,
    *,
    itm_labels: Tensor,
    mrc_target_probs: Tensor,
    mlm_labels: Optional[Tensor] = None,
    mrc_target_mask: Optional[Tensor] = None,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    count_denominator: Optional[Callable[[Tensor], Tensor]] = None,
) -> PretrainLoss:
    """MLM + MRC-KL + ITM (weights 1 by default, docs/method.md §6).

    Args:
        logits: from ``PretrainHeads``; gathered or full, as it was called.
        itm_labels: (B,) long, 1 = matched.
        mrc_target_probs: (B, N, C) detector class distributions of the real regions, or (K_r, C) those
            of the target regions only, in ``flat_index(target mask)`` order (``PretrainLabels.mrc_targets``
            from the collate; any float type, computed in float32).
        mlm_labels: (B, T) MLM labels; needed only when ``logits.mlm`` is the full (B, T, V) tensor.
        mrc_target_mask: (B, N) bool MRC targets; needed only when ``logits.mrc`` is the full
            (B, N, C) tensor.
        weights: (mlm, mrc, itm) loss weights.
        count_denominator: maps this batch's (2,) float [MLM targets, MRC targets] to what the MLM and
            MRC sums are divided by; None = this batch's counts (a per-batch mean). DDP training passes
            ``train.distributed.global_count_denominator`` so the objective is a mean over the global
            batch's targets, as one process would compute it. ITM is a per-sample mean over equal-sized
            per-process batches and needs nothing.

    Returns:
        ``PretrainLoss``.
    """
    labels_used = logits.mlm_labels if logits.mlm_labels is not None else mlm_labels
    if labels_used is None:
        raise ValueError("pretrain_loss: full MLM logits need mlm_labels (B, T)")
    mlm_den = mrc_den = None
    if count_denominator is not None:
        if logits.mrc_target_mask is not None:  # gathered: every row is a target
            mrc_count = torch.tensor(float(logits.mrc.shape[0]), device=logits.mrc.device)
        elif mrc_target_mask is not None:
            mrc_count = mrc_target_mask.sum().float()
        else:
            raise ValueError("pretrain_loss: full MRC logits need mrc_target_mask (B, N)")
        mlm_den, mrc_den = count_denominator(torch.stack([mlm_target_count(labels_used).float(), mrc_count]))
    mlm = mlm_loss(logits.mlm, labels_used, mlm_den)
    gathered_targets = mrc_target_probs.dim() == 2  # (K_r, C): the collate sent the target rows only
    if logits.mrc_target_mask is not None:
        mask = logits.mrc_target_mask
        if logits.mrc_index is None:
            raise ValueError("pretrain_loss: gathered MRC logits need PretrainLogits.mrc_index (PretrainHeads sets it)")
        if gathered_targets:
            # Shapes only (no host sync): the rows must be the ones the head gathered, in its order.
            if mrc_target_probs.shape[0] != logits.mrc.shape[0]:
                raise ValueError(
                    f"pretrain_loss: gathered mrc_target_probs has {mrc_target_probs.shape[0]} rows, the MRC "
                    f"logits {logits.mrc.shape[0]} (one row per target region, in mrc_index order)"
                )
            targets = mrc_target_probs
        else:
            if tuple(mrc_target_probs.shape[:-1]) != tuple(mask.shape):
                raise ValueError(
                    f"pretrain_loss: mrc_target_probs must be (B, N, C) with (B, N) = {tuple(mask.shape)}, "
                    f"or (K_r, C) gathered, got {tuple(mrc_target_probs.shape)}"
                )
            # The rows the head gathered, by index: mrc_target_probs[mask] would sync on a GPU.
            targets = gather_rows(mrc_target_probs, logits.mrc_index)
        mrc = mrc_kl_loss(logits.mrc, targets, denominator=mrc_den)
    elif mrc_target_mask is not None:
        if gathered_targets:  # full logits, target rows only: gather the logits (finding K syncs on a GPU)
            rows = gather_rows(logits.mrc, flat_index(mrc_target_mask))
            mrc = mrc_kl_loss(rows, mrc_target_probs, denominator=mrc_den)
        else:
            mrc = mrc_kl_loss(logits.mrc, mrc_target_probs, mrc_target_mask, denominator=mrc_den)
    else:
        raise ValueError("pretrain_loss: full MRC logits need mrc_target_mask (B, N)")
    itm = itm_loss(logits.itm, itm_labels)
    w_mlm, w_mrc, w_itm = weights
    return PretrainLoss(total=w_mlm * mlm + w_mrc * mrc + w_itm * itm, mlm=mlm, mrc=mrc, itm=itm)


def vqa_bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """BCE-with-logits against soft scores, × the number of answers (VOLTA: sum over answers, mean over batch).

    Args:
        logits: (B, A).
        targets: (B, A) soft scores in [0, 1].
    """
    if logits.dim() != 2 or tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(
            f"vqa_bce_loss: expects logits and targets of the same (B, A) shape, "
            f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    logits = _upcast(logits)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype)) * logits.shape[1]


def retrieval_4way_loss(scores: Tensor, num_options: int = RETRIEVAL_NUM_OPTIONS) -> Tensor:
    """Cross-entropy over groups of ``num_options`` pair scores whose positive is at index 0.

    Args:
        scores: (G, num_options) or flat (G * num_options,) with each group's scores consecutive
            (positive, random caption, random image, hard-negative caption).
        num_options: group size (4 in docs/method.md §7).
    """
    if scores.dim() == 1:
        if scores.numel() % num_options:
            raise ValueError(
                f"retrieval_4way_loss: {scores.numel()} flat scores do not split into groups of {num_options}"
            )
        scores = scores.view(-1, num_options)
    if scores.dim() != 2 or scores.shape[1] != num_options:
        raise ValueError(
            f"retrieval_4way_loss: expects scores (G, {num_options}) or (G*{num_options},), got {tuple(scores.shape)}"
        )
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(_upcast(scores), target)


def refexp_bce_loss(logits: Tensor, iou_targets: Tensor, region_mask: Tensor, reduction: str = "mean") -> Tensor:
    """BCE-with-logits of each region's score against its IoU target.

    ``reduction="mean"``: the mean over valid regions. ``"volta"``: summed over each sentence's valid
    regions, then the mean over sentences; that is VOLTA's ``BCEWithLogitsLoss(mean) * num_regions``
    (its padded regions carry a -10000 logit and a 0 target, so they add nothing), about 36 times the
    per-region mean, which matters under gradient clipping.

    Args:
        logits: (B, N) region logits (``RefExpHead``).
        iou_targets: (B, N) IoU of each detected region with the referred box, in [0, 1].
        region_mask: (B, N) bool, True = a real region (``EncoderOutput.region_mask[:, 1:]``).
    """
    if logits.dim() != 2 or tuple(iou_targets.shape) != tuple(logits.shape) or tuple(region_mask.shape) != tuple(
        logits.shape
    ):
        raise ValueError(
            f"refexp_bce_loss: logits, iou_targets and region_mask must share one (B, N) shape, got "
            f"{tuple(logits.shape)}, {tuple(iou_targets.shape)}, {tuple(region_mask.shape)}"
        )
    if region_mask.dtype != torch.bool:
        raise ValueError(f"refexp_bce_loss: region_mask must be bool (True = real region), got {region_mask.dtype}")
    if reduction not in ("mean", "volta"):
        raise ValueError(f"refexp_bce_loss: reduction must be 'mean' or 'volta', got {reduction!r}")
    logits = _upcast(logits)
    per_region = F.binary_cross_entropy_with_logits(logits, iou_targets.to(logits.dtype), reduction="none")
    if reduction == "volta":
        summed = torch.where(region_mask, per_region, torch.zeros_like(per_region)).sum()
        return summed / max(logits.shape[0], 1)
    return _masked_mean(per_region, region_mask)
