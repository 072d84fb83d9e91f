"""Downstream task heads (docs/method.md §7): VQA classifier, retrieval pair scorer, referring-expression scorer.

Every model, single- or dual-stream, gets the same heads on the same inputs (VOLTA's controlled
setting): VQA and retrieval read the fused vector ``pooled``; RefExp reads each real region's state.
Like VOLTA's ``BertForVLTasks``, each head first applies dropout to its input (0.1 there; the
training tasks pass the model's ``hidden_dropout``, 0.1 by default).

Dimension legend
    B  batch size (for retrieval: the number of (caption, image) pairs scored)
    R  region tokens (IMG + regions), N = R - 1 real regions
    D_r region hidden size, P pooler size, A answer vocabulary size (3,129 for VQAv2)
"""

from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from switchbert.heads.pretrain import _positive, init_linear
from switchbert.outputs import EncoderOutput

VQA_NUM_ANSWERS = 3129
"""Answer vocabulary of VQAv2 in VOLTA / BUTD (answers given at least 9 times in train+val)."""

VQA_CLASSIFIER_HIDDEN = 1536
"""Hidden width of VOLTA's two-layer VQA classifier (2 x 768)."""

HEAD_DROPOUT = 0.1
"""Dropout on a task head's input (VOLTA's ``BertForVLTasks(dropout_prob=0.1)``)."""

TASKS: tuple[str, ...] = ("vqa", "retrieval", "refexp")


class VQAHead(nn.Module):
    """Linear(P -> 1536) -> GELU -> LayerNorm -> Linear(-> A) on the fused vector (VOLTA's classifier).

    Args:
        pooler_size: P.
        num_answers: A.
        hidden_size: width of the hidden layer (1536 in VOLTA).
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the normal weight initialisation.
        dropout: dropout on ``pooled`` before the classifier (training only).
    """

    def __init__(
        self,
        pooler_size: int,
        num_answers: int = VQA_NUM_ANSWERS,
        hidden_size: int = VQA_CLASSIFIER_HIDDEN,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        dropout: float = HEAD_DROPOUT,
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        for name, value in (("pooler_size", pooler_size), ("num_answers", num_answers), ("hidden_size", hidden_size)):
            _positive(name, value)
        self.num_answers = num_answers
        self.dense = nn.Linear(pooler_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.classifier = nn.Linear(hidden_size, num_answers)
        init_linear(self.dense, initializer_range)
        init_linear(self.classifier, initializer_range)

    def forward(self, output: EncoderOutput) -> Tensor:
        """Returns (B, A) answer logits from ``output.pooled`` (B, P)."""
        return self.classifier(self.layer_norm(F.gelu(self.dense(self.dropout(output.pooled)))))


class RetrievalHead(nn.Module):
    """Linear(P -> 1): one matching score per (caption, image) pair from the fused vector.

    Args:
        pooler_size: P.
        initializer_range: std of the normal weight initialisation.
        dropout: dropout on ``pooled`` before the scorer (training only).
    """

    def __init__(self, pooler_size: int, initializer_range: float = 0.02, dropout: float = HEAD_DROPOUT) -> None:
        super().__init__()
        _positive("pooler_size", pooler_size)
        self.dropout = nn.Dropout(dropout)
        self.scorer = nn.Linear(pooler_size, 1)
        init_linear(self.scorer, initializer_range)

    def forward(self, output: EncoderOutput) -> Tensor:
        """Returns (B,) scores, one per pair. For the 4-way loss lay pairs out as (B/4, 4), positive first."""
        return self.scorer(self.dropout(output.pooled)).squeeze(-1)


class RefExpHead(nn.Module):
    """Linear(D_r -> 1) on every real region's state: how well the region matches the expression.

    Args:
        region_hidden_size: D_r.
        initializer_range: std of the normal weight initialisation.
        dropout: dropout on the region states before the scorer (training only).
    """

    def __init__(self, region_hidden_size: int, initializer_range: float = 0.02, dropout: float = HEAD_DROPOUT) -> None:
        super().__init__()
        _positive("region_hidden_size", region_hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.region_hidden_size = region_hidden_size
        self.scorer = nn.Linear(region_hidden_size, 1)
        init_linear(self.scorer, initializer_range)

    def forward(self, output: EncoderOutput) -> Tensor:
        """Returns (B, N) region logits from ``output.region_hidden[:, 1:]`` (the IMG token is no candidate).

        Padded regions get a logit too; the loss and the accuracy mask them with
        ``output.region_mask[:, 1:]``.
        """
        region_hidden = output.region_hidden
        if region_hidden.dim() != 3 or region_hidden.shape[-1] != self.region_hidden_size:
            raise ValueError(
                f"RefExpHead expects region_hidden of shape (B, R, {self.region_hidden_size}), "
                f"got {tuple(region_hidden.shape)}"
            )
        return self.scorer(self.dropout(region_hidden[:, 1:])).squeeze(-1)


def build_head(
    task: str,
    *,
    pooler_size: int,
    region_hidden_size: Optional[int] = None,
    num_answers: int = VQA_NUM_ANSWERS,
    layer_norm_eps: float = 1e-12,
    initializer_range: float = 0.02,
    dropout: float = HEAD_DROPOUT,
) -> nn.Module:
    """The fine-tuning head of ``task``.

    Args:
        task: one of ``"vqa"``, ``"retrieval"``, ``"refexp"``.
        pooler_size: P (VQA, retrieval).
        region_hidden_size: D_r (RefExp; required for it).
        num_answers: A (VQA).
        layer_norm_eps: LayerNorm epsilon (VQA).
        initializer_range: std of the normal weight initialisation.
        dropout: dropout on the head's input (VOLTA: 0.1).

    Returns:
        ``VQAHead``, ``RetrievalHead`` or ``RefExpHead``.
    """
    if task == "vqa":
        return VQAHead(pooler_size, num_answers, layer_norm_eps=layer_norm_eps, initializer_range=initializer_range,
                       dropout=dropout)
    if task == "retrieval":
        return RetrievalHead(pooler_size, initializer_range=initializer_range, dropout=dropout)
    if task == "refexp":
        if region_hidden_size is None:
            raise ValueError("build_head('refexp') needs region_hidden_size (D_r, the region stream width)")
        return RefExpHead(region_hidden_size, initializer_range=initializer_range, dropout=dropout)
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
