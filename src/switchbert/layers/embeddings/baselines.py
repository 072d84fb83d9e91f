"""The baselines' embedding variants (docs/method.md §5, VOLTA ``volta/embeddings.py``).

Dimension legend
    B batch size, T text tokens, N detected regions, R = N + 1 region tokens (IMG first)
    F region feature size, D text hidden size, D_r region hidden size (dual-stream only)

Every class has ``UniterEmbeddings``' interface: ``forward(batch) -> (text (B, T, D), regions
(B, R, D_r) with the IMG token first, region mask (B, R))``, and keeps BERT's text tables under
``.text`` (a ``TextEmbeddings``), so BERT initialisation and the tied MLM decoder find them in the same
place for every model.

    visualbert  text: word + position + type(0); regions: W f + visual_type(1) + visual_position(0);
                ONE LayerNorm over both (VisualBERT ignores boxes).
    vlbert      regions: ReLU(W [sinusoid(box); f]) (8*c + F -> D), then LN_obj(.) + object word
                embedding + position + type(2); text tokens also get LN_txt(one slot's visual vector:
                the IMG token's, or with ``vlbert_text_visual="last"`` VOLTA's last slot); ONE
                LayerNorm over both. LN_obj and LN_txt start with zero gain (``vlbert_*_gain_init``).
    lxmert      regions: (LN_f(W_f f) + LN_b(W_b b)) / 2 (LXMERT; no LayerNorm after, no type).
    vilbert     regions: LN(W_f f + W_b b) (ViLBERT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from switchbert.batch import Batch
from switchbert.config import ModelConfig
from switchbert.layers.embeddings.common import TextEmbeddings, add_img_token, region_token_mask


def _box_input(boxes: Tensor, box_dim: int) -> Tensor:
    """(B, R, 5) -> (B, R, box_dim): 4 keeps (x1, y1, x2, y2), HF LXMERT's ``visual_pos``."""
    return boxes if box_dim == boxes.shape[-1] else boxes[..., :box_dim]


class _TextTables(nn.Module):
    """Base: owns BERT's text tables (``.text``) and the text positions every variant shares."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.text = TextEmbeddings(config)

    def _text_sum(self, text_ids: Tensor) -> Tensor:
        """word + position + type(0) before any LayerNorm: (B, T) -> (B, T, D)."""
        t = self.text
        T = text_ids.shape[1]
        if T > t.position_embeddings.num_embeddings:
            raise ValueError(f"Batch.text_ids has {T} tokens, more than max_position={t.position_embeddings.num_embeddings}")
        positions = torch.arange(T, device=text_ids.device)
        return t.word_embeddings(text_ids) + t.position_embeddings(positions)[None] + t.token_type_embeddings.weight[0]


class VisualBertEmbeddings(_TextTables):
    """VisualBERT (Li et al. 2019; VOLTA ``VisualBertEmbeddings``, HF ``VisualBertEmbeddings``).

    Regions: projection(f) + visual token type 1 + visual position 0; boxes are ignored. Text and
    regions go through the same LayerNorm (``text.norm``) and dropout. The visual type and position
    tables are full copies of BERT's shape, as in VOLTA and HF, so their checkpoints load as is.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        D = config.hidden_size
        self.feat_proj = nn.Linear(config.region_feat_dim, D)
        self.type_embeddings = nn.Embedding(config.type_vocab_size, D)
        self.position_embeddings = nn.Embedding(config.max_position, D)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Returns text (B, T, D), regions (B, R, D) with IMG first, region mask (B, R)."""
        feats, _ = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
        text = self._text_sum(batch.text_ids)
        # HF/VOLTA without image-text alignment: every region has visual position id 0, type id 1.
        region = self.feat_proj(feats) + self.type_embeddings.weight[1] + self.position_embeddings.weight[0]
        norm, drop = self.text.norm, self.text.dropout
        return drop(norm(text)), drop(norm(region)), region_token_mask(batch)


def box_sinusoid(boxes: Tensor, dim: int) -> Tensor:
    """VL-BERT's geometry embedding (VOLTA ``coordinate_embeddings``).

    Args:
        boxes: (B, R, >=4) normalised (x1, y1, x2, y2, ...).
        dim: frequencies per coordinate.

    Returns:
        (B, R, 8 * dim): for (x_c, y_c, w, h) * 100, sin then cos at wavelengths 1000^(k/dim).
    """
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    pos = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1) * 100  # (B, R, 4)
    freq = 1000 ** (torch.arange(dim, dtype=boxes.dtype, device=boxes.device) / float(dim))
    angles = pos.unsqueeze(-1) / freq  # (B, R, 4, dim)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class ZeroGainLayerNorm(nn.Module):
    """A LayerNorm whose gain starts at ``gain``, 0 by default (VL-BERT ``visual_ln_text``/``visual_ln_object``).

    Deliberately not an ``nn.LayerNorm``: ``VLModel.init_weights`` resets those to unit gain, which
    would switch on, from step 0, the visual terms VL-BERT introduces gradually.
    """

    def __init__(self, dim: int, eps: float, gain: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(gain)))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class VLBertEmbeddings(_TextTables):
    """VL-BERT (Su et al. 2020) as VOLTA's controlled setting builds it (``VLBertEmbeddings``).

    Region features with a zero vector (an MRC-masked region) are replaced by a learned feature
    (``mask_feature``, VOLTA ``object_mask_visual_embedding``) before the projection. Regions are
    placed after the text: position = number of real text tokens, the last slot one more (VOLTA's
    [END] handling, ``end_embedding`` replaces the object word embedding there).

    The visual vector added to every text token: ``config.vlbert_text_visual="img"`` (default, a
    departure from VOLTA [ours]) takes the IMG token's, the whole image, as the VL-BERT paper
    describes. ``"last"`` takes the last slot, as VOLTA's code does (index -1 with its IMG-first
    layout): the last region, or a padding slot when the sample has fewer regions than the batch
    is padded to, so that a sample's output depends on its batch mates. Imported VOLTA checkpoints
    use "last" so that they compute what VOLTA computes.

    The region token type is row 2 of VOLTA's 3-row table; here it is a separate vector so that BERT's
    2-row table loads unchanged (the importer splits VOLTA's table).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        D, F_ = config.hidden_size, config.region_feat_dim
        eps = config.layer_norm_eps
        self.coord_dim = config.vlbert_coord_dim
        self.text_visual_slot = 0 if config.vlbert_text_visual == "img" else -1
        self.feat_dropout = nn.Dropout(config.attention_dropout)  # VOLTA: v_attention_probs_dropout_prob
        self.feat_proj = nn.Linear(8 * self.coord_dim + F_, D)
        self.mask_feature = nn.Parameter(torch.zeros(F_))
        self.object_embedding = nn.Parameter(torch.empty(D).normal_(std=config.initializer_range))
        self.end_embedding = nn.Parameter(torch.empty(D).normal_(std=config.initializer_range))
        self.type_embedding = nn.Parameter(torch.empty(D).normal_(std=config.initializer_range))
        self.text_visual_norm = ZeroGainLayerNorm(D, eps, config.vlbert_text_gain_init)
        self.object_norm = ZeroGainLayerNorm(D, eps, config.vlbert_object_gain_init)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Returns text (B, T, D), regions (B, R, D) with IMG first, region mask (B, R)."""
        feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
        B, R, _ = feats.shape
        zero = (feats == 0).all(dim=-1, keepdim=True)  # (B, R, 1): masked (or padded) regions
        feats = torch.where(zero, self.mask_feature.to(feats.dtype), feats)
        geo = box_sinusoid(boxes, self.coord_dim).to(feats.dtype)
        visual = F.relu(self.feat_proj(self.feat_dropout(torch.cat([geo, feats], dim=-1))))  # (B, R, D)

        t = self.text
        k = self.text_visual_slot
        slot = visual[:, k:k + 1] if k >= 0 else visual[:, k:]  # (B, 1, D)
        text = self._text_sum(batch.text_ids) + self.text_visual_norm(slot)
        # Regions sit after the real text tokens; VOLTA gives the last slot position + 1 and [END].
        text_len = batch.text_mask.sum(dim=1)  # (B,)
        is_last = torch.arange(R, device=feats.device) == R - 1  # (R,)
        pos_ids = (text_len[:, None] + is_last[None].long()).clamp(max=t.position_embeddings.num_embeddings - 1)
        word = torch.where(is_last[:, None], self.end_embedding, self.object_embedding)  # (R, D)
        region = self.object_norm(visual) + word + t.position_embeddings(pos_ids) + self.type_embedding
        return t.dropout(t.norm(text)), t.dropout(t.norm(region)), region_token_mask(batch)


class LxmertEmbeddings(_TextTables):
    """LXMERT's visual feature encoder (VOLTA ``LxmertImageEmbeddings``, HF ``LxmertVisualFeatureEncoder``).

    regions = dropout((LN_f(W_f f) + LN_b(W_b b)) / 2), width D_r; text is plain BERT.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        Dr, eps = config.region_hidden_size_, config.layer_norm_eps
        self.box_dim = config.region_box_dim
        self.feat_proj = nn.Linear(config.region_feat_dim, Dr)
        self.feat_norm = nn.LayerNorm(Dr, eps=eps)
        self.box_proj = nn.Linear(config.region_box_dim, Dr)
        self.box_norm = nn.LayerNorm(Dr, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Returns text (B, T, D), regions (B, R, D_r) with IMG first, region mask (B, R)."""
        feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
        x = self.feat_norm(self.feat_proj(feats))
        y = self.box_norm(self.box_proj(_box_input(boxes, self.box_dim)))
        return self.text(batch.text_ids), self.dropout((x + y) / 2), region_token_mask(batch)


class ViLBertEmbeddings(_TextTables):
    """ViLBERT's image embedding (VOLTA ``ViLBertImageEmbeddings``): dropout(LN(W_f f + W_b b)), width D_r."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        Dr = config.region_hidden_size_
        self.box_dim = config.region_box_dim
        self.feat_proj = nn.Linear(config.region_feat_dim, Dr)
        self.box_proj = nn.Linear(config.region_box_dim, Dr)
        self.norm = nn.LayerNorm(Dr, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """Returns text (B, T, D), regions (B, R, D_r) with IMG first, region mask (B, R)."""
        feats, boxes = add_img_token(batch.region_feats, batch.region_boxes, batch.region_mask)
        region = self.norm(self.feat_proj(feats) + self.box_proj(_box_input(boxes, self.box_dim)))
        return self.text(batch.text_ids), self.dropout(region), region_token_mask(batch)


BASELINE_EMBEDDINGS: dict[str, type[nn.Module]] = {
    "visualbert": VisualBertEmbeddings,
    "vlbert": VLBertEmbeddings,
    "lxmert": LxmertEmbeddings,
    "vilbert": ViLBertEmbeddings,
}
"""Added to ``layers.embeddings.EMBEDDINGS`` (by name, as ``ModelConfig.embedding`` spells it)."""
