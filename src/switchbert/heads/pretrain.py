"""Pretraining heads: masked language modelling, masked region classification, image-text matching.

docs/method.md §6 (VOLTA's controlled setting): MLM with a decoder tied to the word embeddings, MRC-KL against
the detector's class distribution, ITM on the fused vector. Losses are separate functions
(``switchbert.heads.losses``); these modules only produce logits.

Dimension legend
    B  batch size, T text tokens, R region tokens (IMG + regions), N = R - 1 real regions
    D  text hidden size, D_r region hidden size (differs from D only in dual-stream baselines)
    P  pooler size, V vocabulary size, C detector classes (1601 for BUTD features)
    K  number of selected positions (masked tokens, or target regions) in the whole batch

Gathering the K selected rows needs their positions. A boolean mask gives them through ``nonzero``,
which on a GPU makes the host wait for the device (it must learn K to size the result). The training
step therefore passes ``mlm_index`` / ``mrc_index``, the flat positions that ``collate_pretrain``
computed on the CPU, and the heads gather with ``index_select``, which needs no sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from switchbert.outputs import EncoderOutput

IGNORE_INDEX = -100
"""Label of a text position that is not an MLM target (PyTorch's cross-entropy convention)."""

NUM_DETECTOR_CLASSES = 1601
"""Classes of the BUTD Visual Genome detector (1600 objects + background), the MRC-KL target size."""


def flat_index(mask: Tensor) -> Tensor:
    """The positions of the True entries of ``mask`` flattened in row-major order.

    Args:
        mask: (...) bool.

    Returns:
        (K,) long, ascending: the row order of ``x[mask]`` for any ``x`` of the mask's shape.
        Free on a CPU tensor (the collate calls it); on a GPU tensor it is one host sync.
    """
    return mask.reshape(-1).nonzero().squeeze(1)


def gather_rows(x: Tensor, index: Tensor, lead_dims: int = 2) -> Tensor:
    """``x`` with its first ``lead_dims`` dimensions flattened, rows ``index`` taken: (K, ...).

    Equals ``x[mask]`` when ``index = flat_index(mask)``, and its backward is the same scatter-add.
    """
    return x.reshape(-1, *x.shape[lead_dims:]).index_select(0, index)


def init_linear(module: nn.Linear, initializer_range: float) -> None:
    """BERT initialisation: N(0, initializer_range) weights, zero bias."""
    nn.init.normal_(module.weight, mean=0.0, std=initializer_range)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class PredictionTransform(nn.Module):
    """BERT's head transform: Linear(dim, dim) -> GELU -> LayerNorm.

    Args:
        dim: input and output size.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the normal weight initialisation.
        layer_norm: False = no LayerNorm (``layer_norm`` is then an ``nn.Identity`` without
            parameters): VOLTA's VL-BERT region head (``image_head_ln: false``).
    """

    def __init__(self, dim: int, layer_norm_eps: float = 1e-12, initializer_range: float = 0.02,
                 layer_norm: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.layer_norm: nn.Module = nn.LayerNorm(dim, eps=layer_norm_eps) if layer_norm else nn.Identity()
        init_linear(self.dense, initializer_range)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim)."""
        return self.layer_norm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    """Masked language modelling head whose decoder is the word embedding matrix (docs/method.md §6).

    The head does NOT own the embedding: it keeps an unregistered reference, so its ``state_dict``
    holds only the transform and the output bias, while the (shared) matrix is saved once, with the
    encoder that owns it. Gradients of the decoder still flow into that matrix.

    Args:
        word_embeddings: the model's ``nn.Embedding`` (V, D), preferred, or its weight ``Parameter``.
            Passing the module keeps the tie even if the owner later replaces the Parameter object.
        layer_norm_eps: LayerNorm epsilon of the transform.
        initializer_range: std of the normal weight initialisation.
    """

    def __init__(
        self,
        word_embeddings: Union[nn.Embedding, nn.Parameter],
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
    ) -> None:
        super().__init__()
        if isinstance(word_embeddings, nn.Embedding):
            weight = word_embeddings.weight
        elif isinstance(word_embeddings, nn.Parameter):
            weight = word_embeddings
        else:
            raise ValueError(
                "MLMHead needs the model's nn.Embedding (or its weight Parameter) to tie the decoder, "
                f"got {type(word_embeddings).__name__}"
            )
        if weight.dim() != 2:
            raise ValueError(f"word embedding weight must be (V, D), got shape {tuple(weight.shape)}")
        vocab_size, hidden_size = weight.shape
        # object.__setattr__ bypasses nn.Module's registration: the tie is a reference, not ownership.
        object.__setattr__(self, "_tied", word_embeddings)
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.transform = PredictionTransform(self.hidden_size, layer_norm_eps, initializer_range)
        self.bias = nn.Parameter(torch.zeros(self.vocab_size))

    @property
    def decoder_weight(self) -> Tensor:
        """(V, D) the tied word embedding matrix (the very Parameter the encoder owns)."""
        tied = self._tied
        return tied.weight if isinstance(tied, nn.Embedding) else tied

    def _check_hidden(self, text_hidden: Tensor) -> None:
        if text_hidden.dim() != 3 or text_hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"MLMHead expects text_hidden of shape (B, T, {self.hidden_size}), got {tuple(text_hidden.shape)}"
            )

    def _decode(self, h: Tensor) -> Tensor:
        return F.linear(self.transform(h), self.decoder_weight, self.bias)

    def forward(self, text_hidden: Tensor) -> Tensor:
        """Logits at every text position.

        Args:
            text_hidden: (B, T, D).

        Returns:
            (B, T, V) logits.
        """
        self._check_hidden(text_hidden)
        return self._decode(text_hidden)

    def masked_logits(
        self, text_hidden: Tensor, labels: Tensor, index: Optional[Tensor] = None
    ) -> tuple[Tensor, Tensor]:
        """Logits only where ``labels != -100``: the (K, V) product instead of (B*T, V), ~7x cheaper at 15%.

        Args:
            text_hidden: (B, T, D).
            labels: (B, T) long, the original token id at MLM targets and -100 elsewhere.
            index: optional (K,) long flat positions (b * T + t) of the targets, ascending
                (``PretrainLabels.mlm_index``); None = found from ``labels`` (one host sync on a GPU).
                A position whose label is -100 is harmless: the loss ignores it.

        Returns:
            logits (K, V) and their labels (K,), positions in row-major (b, t) order.
        """
        self._check_hidden(text_hidden)
        if tuple(labels.shape) != tuple(text_hidden.shape[:2]):
            raise ValueError(
                f"MLM labels must have shape (B, T) = {tuple(text_hidden.shape[:2])}, got {tuple(labels.shape)}"
            )
        if index is None:
            index = flat_index(labels != IGNORE_INDEX)
        _check_index("MLM index", index)
        return self._decode(gather_rows(text_hidden, index)), gather_rows(labels, index)


class MRCHead(nn.Module):
    """Masked region classification head: transform then Linear(D_r -> C) per real region (UNITER/VOLTA).

    Args:
        region_hidden_size: D_r, the region stream's width.
        num_classes: C, the detector's classes (1601 for BUTD).
        layer_norm_eps: LayerNorm epsilon of the transform.
        initializer_range: std of the normal weight initialisation.
        layer_norm: the transform's LayerNorm (``ModelConfig.mrc_head_norm``; VOLTA's VL-BERT has none).
    """

    def __init__(
        self,
        region_hidden_size: int,
        num_classes: int = NUM_DETECTOR_CLASSES,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        _positive("region_hidden_size", region_hidden_size)
        _positive("num_classes", num_classes)
        self.region_hidden_size = region_hidden_size
        self.num_classes = num_classes
        self.transform = PredictionTransform(region_hidden_size, layer_norm_eps, initializer_range, layer_norm)
        self.decoder = nn.Linear(region_hidden_size, num_classes)
        init_linear(self.decoder, initializer_range)

    def _check_hidden(self, region_hidden: Tensor) -> None:
        if region_hidden.dim() != 3 or region_hidden.shape[-1] != self.region_hidden_size:
            raise ValueError(
                f"MRCHead expects real-region states of shape (B, N, {self.region_hidden_size}) "
                f"(region_hidden[:, 1:]), got {tuple(region_hidden.shape)}"
            )

    def forward(self, region_hidden: Tensor) -> Tensor:
        """Class logits for every real region.

        Args:
            region_hidden: (B, N, D_r), the real regions only (``EncoderOutput.region_hidden[:, 1:]``).

        Returns:
            (B, N, C) logits.
        """
        self._check_hidden(region_hidden)
        return self.decoder(self.transform(region_hidden))

    def masked_logits(self, region_hidden: Tensor, target_mask: Tensor, index: Optional[Tensor] = None) -> Tensor:
        """Logits only at the target regions.

        Args:
            region_hidden: (B, N, D_r) real-region states.
            target_mask: (B, N) bool, True = an MRC target.
            index: optional (K,) long ``flat_index(target_mask)`` (``PretrainLabels.mrc_index``);
                None = computed here (one host sync on a GPU). It must match ``target_mask``.

        Returns:
            (K, C) logits in row-major (b, n) order.
        """
        self._check_hidden(region_hidden)
        _check_bool_mask("MRC target_mask", target_mask, tuple(region_hidden.shape[:2]))
        if index is None:
            index = flat_index(target_mask)
        _check_index("MRC index", index)
        return self.decoder(self.transform(gather_rows(region_hidden, index)))


class ITMHead(nn.Module):
    """Image-text matching: Linear(P -> 2) on the fused vector. Class 1 = the pair matches.

    VOLTA's ``cls.bi_seq_relationship`` has the opposite convention (its label 0 = matched, 1 = the
    caption was replaced); the VOLTA importer swaps the two rows, so imported logits mean the same.

    Args:
        pooler_size: P.
        initializer_range: std of the normal weight initialisation.
    """

    def __init__(self, pooler_size: int, initializer_range: float = 0.02) -> None:
        super().__init__()
        _positive("pooler_size", pooler_size)
        self.classifier = nn.Linear(pooler_size, 2)
        init_linear(self.classifier, initializer_range)

    def forward(self, pooled: Tensor) -> Tensor:
        """(B, P) fused vector -> (B, 2) logits."""
        return self.classifier(pooled)


@dataclass
class PretrainLogits:
    """What ``PretrainHeads`` returns.

    Attributes:
        mlm: (K, V) logits at the MLM targets when labels were given, else (B, T, V).
        mlm_labels: (K,) the labels of those rows, or None when ``mlm`` is the full (B, T, V) tensor.
        mrc: (K_r, C) logits at the target regions when a target mask was given, else (B, N, C).
        mrc_target_mask: (B, N) the mask used to gather ``mrc``, or None when ``mrc`` is full.
        itm: (B, 2) matching logits.
        mrc_index: (K_r,) long flat positions (b * N + n) of the ``mrc`` rows, or None when ``mrc``
            is full; the loss gathers the detector's distributions with it.
    """

    mlm: Tensor
    mlm_labels: Optional[Tensor]
    mrc: Tensor
    mrc_target_mask: Optional[Tensor]
    itm: Tensor
    mrc_index: Optional[Tensor] = None


class PretrainHeads(nn.Module):
    """The three pretraining heads of docs/method.md §6 applied to one ``EncoderOutput``.

    Args:
        word_embeddings: the model's word ``nn.Embedding`` (V, D); the MLM decoder is tied to it.
        region_hidden_size: D_r.
        pooler_size: P.
        num_region_classes: C, the detector's classes.
        layer_norm_eps: LayerNorm epsilon of the transforms.
        initializer_range: std of the normal weight initialisation.
        mrc_layer_norm: the MRC transform's LayerNorm (``ModelConfig.mrc_head_norm``).
    """

    def __init__(
        self,
        word_embeddings: Union[nn.Embedding, nn.Parameter],
        region_hidden_size: int,
        pooler_size: int,
        num_region_classes: int = NUM_DETECTOR_CLASSES,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        mrc_layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.mlm = MLMHead(word_embeddings, layer_norm_eps, initializer_range)
        self.mrc = MRCHead(region_hidden_size, num_region_classes, layer_norm_eps, initializer_range, mrc_layer_norm)
        self.itm = ITMHead(pooler_size, initializer_range)

    def forward(
        self,
        output: EncoderOutput,
        mlm_labels: Optional[Tensor] = None,
        mrc_target_mask: Optional[Tensor] = None,
        *,
        mlm_index: Optional[Tensor] = None,
        mrc_index: Optional[Tensor] = None,
    ) -> PretrainLogits:
        """Computes the three heads' logits.

        Args:
            output: the encoder's output.
            mlm_labels: optional (B, T) long MLM labels (-100 = not a target). Given, MLM logits are
                computed at the targets only; absent, at every position.
            mrc_target_mask: optional (B, N) bool, N = R - 1. Given, MRC logits are computed at the
                target regions only; absent, at every real region.
            mlm_index: optional (K,) long flat target positions in (B, T) (``PretrainLabels.mlm_index``);
                with ``mlm_labels`` only. Saves the host sync of finding them on the device.
            mrc_index: optional (K_r,) long ``flat_index(mrc_target_mask)`` (``PretrainLabels.mrc_index``);
                with ``mrc_target_mask`` only.

        Returns:
            ``PretrainLogits``.
        """
        if mlm_index is not None and mlm_labels is None:
            raise ValueError("PretrainHeads: mlm_index needs mlm_labels (B, T) to gather the labels from")
        if mrc_index is not None and mrc_target_mask is None:
            raise ValueError("PretrainHeads: mrc_index needs mrc_target_mask (B, N)")
        real_regions = output.region_hidden[:, 1:]  # (B, N, D_r): drop the IMG token
        if mlm_labels is not None:
            mlm, gathered_labels = self.mlm.masked_logits(output.text_hidden, mlm_labels, mlm_index)
        else:
            mlm, gathered_labels = self.mlm(output.text_hidden), None
        if mrc_target_mask is not None:
            if mrc_index is None:
                mrc_index = flat_index(mrc_target_mask)  # once here, reused by the loss
            mrc = self.mrc.masked_logits(real_regions, mrc_target_mask, mrc_index)
        else:
            mrc = self.mrc(real_regions)
        return PretrainLogits(
            mlm=mlm,
            mlm_labels=gathered_labels,
            mrc=mrc,
            mrc_target_mask=mrc_target_mask,
            itm=self.itm(output.pooled),
            mrc_index=mrc_index,
        )


def pretrain_heads_for(model: nn.Module, num_region_classes: int = NUM_DETECTOR_CLASSES) -> PretrainHeads:
    """The ``PretrainHeads`` that fit ``model`` (a ``VLModel``): tied to its word embeddings, sized
    and built from its config (``mrc_head_norm`` included). Training, evaluation and import all use it,
    so a saved ``heads.safetensors`` always fits."""
    c = model.config
    return PretrainHeads(model.get_word_embeddings(), c.region_hidden_size_, c.pooler_size,
                         num_region_classes=num_region_classes, layer_norm_eps=c.layer_norm_eps,
                         initializer_range=c.initializer_range, mrc_layer_norm=c.mrc_head_norm)


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_index(name: str, index: Tensor) -> None:
    # Shape and dtype only: comparing the values with the mask would bring back the host sync.
    if index.dim() != 1 or index.dtype != torch.long:
        raise ValueError(f"{name} must be a (K,) long tensor of flat positions, got {index.dtype} {tuple(index.shape)}")


def _check_bool_mask(name: str, mask: Tensor, shape: tuple[int, ...]) -> None:
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = target), got {mask.dtype}")
