"""The model's input: one typed batch of text tokens and image regions.

Dimension legend
    B  batch size
    T  text tokens ([CLS] ... [SEP], padded)
    N  detected regions (padded; the model prepends the IMG token itself, so R = N + 1)
    F  region feature size (2048 for BUTD features)

Masks are boolean with True = a real position (docs/method.md §2). Every check raises a ``ValueError`` that
names the field and the expected and actual shape, so a bad batch fails at the door rather than as a
broadcasting error deep inside attention.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import torch
from torch import Tensor

BOX_DIM = 5  # (x1/W, y1/H, x2/W, y2/H, area/(W*H)), docs/method.md §2


@dataclass
class Batch:
    """A batch of image-text pairs.

    Attributes:
        text_ids: (B, T) long WordPiece ids.
        text_mask: (B, T) bool, True = real token. Every sample needs at least one ([CLS]).
        region_feats: (B, N, F) float detector features. N may be 0.
        region_boxes: (B, N, 5) float normalised boxes.
        region_mask: (B, N) bool, True = real region. A sample may have no region; it still gets
            the IMG token.
        image_mask: optional (B,) bool; False = the sample has no image at all (a text-only input):
            the IMG token is then masked too, so the model sees the text alone. None = every sample
            has an image.
        noise_group: optional (B,) long, ids in [0, B): samples with the same id share one draw of
            the switchers' Gumbel noise in training. Retrieval's 4-way loss sets it so a caption's
            four candidate pairs are routed by the same noise and compete on their content, not on
            four independent random mixtures of modes [ours, docs/method.md §3.2]. None = every
            sample draws its own (the paper's default). Ignored by models without switchers and
            at inference, which is deterministic.
    """

    text_ids: Tensor
    text_mask: Tensor
    region_feats: Tensor
    region_boxes: Tensor
    region_mask: Tensor
    image_mask: Optional[Tensor] = None
    noise_group: Optional[Tensor] = None

    @property
    def batch_size(self) -> int:
        return self.text_ids.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Moves every tensor to ``device``."""
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
                if getattr(self, f.name) is not None
            },
        )

    def pin_memory(self) -> "Batch":
        """Pins every tensor (DataLoader calls this when ``pin_memory=True``)."""
        return replace(
            self,
            **{f.name: getattr(self, f.name).pin_memory() for f in fields(self) if getattr(self, f.name) is not None},
        )

    def select(self, index: Tensor) -> "Batch":
        """The sub-batch of the samples in ``index`` (a (k,) long or (B,) bool tensor)."""
        out = replace(
            self, **{f.name: getattr(self, f.name)[index] for f in fields(self) if getattr(self, f.name) is not None}
        )
        if out.noise_group is not None:  # renumber the groups kept, so the ids stay in [0, k)
            out.noise_group = torch.unique(out.noise_group, return_inverse=True)[1]
        return out

    def validate(self, region_feat_dim: Optional[int] = None) -> None:
        """Checks dtypes and shapes; raises ``ValueError`` naming the field on the first problem.

        Args:
            region_feat_dim: the feature size F the model expects, if known.
        """
        for name in ("text_ids", "text_mask", "region_feats", "region_boxes", "region_mask"):
            value = getattr(self, name)
            if value is None:
                raise ValueError(f"Batch.{name} is missing: a batch needs both modalities (text and regions)")
            if not isinstance(value, Tensor):
                raise ValueError(f"Batch.{name} must be a torch.Tensor, got {type(value).__name__}")
        if self.text_ids.dim() != 2:
            raise ValueError(f"Batch.text_ids must have shape (B, T), got {tuple(self.text_ids.shape)}")
        B, T = self.text_ids.shape
        if B == 0:
            raise ValueError("empty batch: Batch.text_ids has batch size 0")
        if T == 0:
            raise ValueError("Batch.text_ids has 0 tokens: every sample needs at least [CLS]")
        if self.text_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"Batch.text_ids must be an integer tensor, got {self.text_ids.dtype}")
        _expect_mask("text_mask", self.text_mask, (B, T))
        if self.region_feats.dim() != 3 or self.region_feats.shape[0] != B:
            raise ValueError(
                f"Batch.region_feats must have shape (B={B}, N, F), got {tuple(self.region_feats.shape)}"
            )
        N, F = self.region_feats.shape[1], self.region_feats.shape[2]
        if region_feat_dim is not None and F != region_feat_dim:
            raise ValueError(
                f"Batch.region_feats has feature size {F}, the model expects {region_feat_dim} "
                f"(shape {tuple(self.region_feats.shape)}, expected ({B}, {N}, {region_feat_dim}))"
            )
        if not self.region_feats.is_floating_point():
            raise ValueError(f"Batch.region_feats must be floating point, got {self.region_feats.dtype}")
        if tuple(self.region_boxes.shape) != (B, N, BOX_DIM):
            raise ValueError(
                f"Batch.region_boxes must have shape (B, N, {BOX_DIM}) = {(B, N, BOX_DIM)}, "
                f"got {tuple(self.region_boxes.shape)}"
            )
        _expect_mask("region_mask", self.region_mask, (B, N))
        if self.image_mask is not None:
            _expect_mask("image_mask", self.image_mask, (B,))
        if self.noise_group is not None:
            g = self.noise_group
            if not isinstance(g, Tensor) or tuple(g.shape) != (B,) or g.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"Batch.noise_group must be a ({B},) integer tensor, got "
                                 f"{tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}"
                                 f"{' ' + str(g.dtype) if isinstance(g, Tensor) else ''}")
            if bool((g < 0).any()) or bool((g >= B).any()):
                raise ValueError(f"Batch.noise_group: ids must lie in [0, {B}), got {int(g.min())}..{int(g.max())}")
        if not bool(self.text_mask.any(dim=1).all()):
            bad = (~self.text_mask.any(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"Batch.text_mask: samples {bad} have no real text token (need at least [CLS])")


def _expect_mask(name: str, mask: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, Tensor):
        raise ValueError(f"Batch.{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"Batch.{name} must have shape {shape} to match its tensor, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise ValueError(f"Batch.{name} must be a bool tensor (True = real position), got {mask.dtype}")
