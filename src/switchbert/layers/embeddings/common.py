"""Text and region embeddings, and the IMG token (docs/method.md §2).

Dimension legend
    B batch size, T text tokens, N detected regions, R = N + 1 region tokens (IMG first)
    F region feature size, D hidden size

Text is BERT's: word + position + token-type(0), LayerNorm, dropout (so BERT weights load as is).
Regions are UNITER's: LN_f(W_f f) + LN_b(W_b b) + token-type(1), LayerNorm, dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from switchbert.batch import BOX_DIM, Batch
from switchbert.config import ModelConfig

IMG_BOX = (0.0, 0.0, 1.0, 1.0, 1.0)  # the whole image, docs/method.md §2


class TextEmbeddings(nn.Module):
    """BERT text embeddings. Parameter names follow BERT's so the key map stays obvious."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, D, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_position, D)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, D)
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, text_ids: Tensor) -> Tensor:
        """(B, T) long -> (B, T, D)."""
        T = text_ids.shape[1]
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Batch.text_ids has {T} tokens, more than max_position={self.position_embeddings.num_embeddings}"
            )
        positions = torch.arange(T, device=text_ids.device)
        x = self.word_embeddings(text_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.norm(x))


def add_img_token(feats: Tensor, boxes: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Prepends the IMG token: mean of the real region features, box = the whole image.

    Args:
        feats: (B, N, F), float16 or bfloat16 widened to float32 first; boxes: (B, N, 5); mask: (B, N) bool.

    Returns:
        feats (B, R, F) and boxes (B, R, 5) with R = N + 1; an image without regions gets a zero
        IMG feature (docs/method.md §2).
    """
    if feats.dtype in (torch.float16, torch.bfloat16):
        # float16 stores reach the model as float16 (half the bytes through the loader and the copy to
        # the device); widened here, on the device, every later op sees what float32 input gave.
        feats = feats.float()
    m = mask.to(feats.dtype).unsqueeze(-1)
    img_feat = (feats * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp(min=1.0)
    img_box = torch.tensor(IMG_BOX, dtype=boxes.dtype, device=boxes.device).expand(boxes.shape[0], 1, BOX_DIM)
    return torch.cat([img_feat, feats], dim=1), torch.cat([img_box, boxes], dim=1)


def region_token_mask(batch: Batch) -> Tensor:
    """(B, R) bool: the IMG token is real unless the sample has no image; then its regions are not either."""
    B = batch.region_mask.shape[0]
    has_image = (
        batch.image_mask
        if batch.image_mask is not None
        else torch.ones(B, dtype=torch.bool, device=batch.region_mask.device)
    )
    return torch.cat([has_image[:, None], batch.region_mask & has_image[:, None]], dim=1)


class UniterRegionEmbeddings(nn.Module):
    """UNITER region embeddings: LN_f(W_f f) + LN_b(W_b b) + type(1), LayerNorm, dropout.

    Args:
        config: sizes.
        token_type: the text embeddings' token-type table, shared (row 1 marks regions).
    """

    def __init__(self, config: ModelConfig, token_type: nn.Embedding) -> None:
        super().__init__()
        D = config.hidden_size
        self.feat_proj = nn.Linear(config.region_feat_dim, D)
        self.feat_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.box_proj = nn.Linear(BOX_DIM, D)
        self.box_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self._token_type = [token_type]  # a list: shared, not registered twice

    def forward(self, feats: Tensor, boxes: Tensor) -> Tensor:
        """(B, R, F), (B, R, 5) -> (B, R, D)."""
        x = self.feat_norm(self.feat_proj(feats)) + self.box_norm(self.box_proj(boxes))
        x = x + self._token_type[0].weight[1]
        return self.dropout(self.norm(x))


class UniterEmbeddings(nn.Module):
    """Text + region embeddings in UNITER's style; the other variants live beside it."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings(config)
        self.region = UniterRegionEmbeddings(config, self.text.token_type_embeddings)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Returns text (B, T, D), regions (B, R, D) with IMG first, region mask (B, R)."""
        feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
        return self.text(batch.text_ids), self.region(feats, boxes), region_token_mask(batch)
