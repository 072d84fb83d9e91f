"""ViLBERT in the controlled setting (Lu et al. 2019; docs/method.md §5; VOLTA ``config/ctrl_vilbert_base.json``).

Dimension legend
    B batch size, T text tokens, R region tokens (IMG + regions), D text width, D_r region width

    text: 6 text-only BERT layers (regions: ``region_layers`` region-only layers, 0 in the controlled setting)
    then 6 co-attention blocks, each:
        1. co-attention: text queries over region keys/values AND region queries over text
           keys/values, with SEPARATE weights per direction, both from the block's inputs;
        2. FFN per modality;  3. self-attention per modality;  4. FFN per modality.
    then VOLTA's ReLU poolers on [CLS] and IMG and product fusion (docs/method.md §4).

BERT init (VOLTA ``bert_layer2*_sublayer``): BERT layers 0-5 -> the text-only layers; BERT layer 6+j ->
block j's text self-attention (step 3) and the FFN after it (step 4). The co-attention, the FFN after
it (step 2) and the whole vision stream start random.

Weight grouping: VOLTA stores per sub-layer one Q/K/V per *stream* (``query``... for text,
``v_query``... for vision); text->region attention then uses text Q with vision K/V. Here each
*direction* is one ``AttentionBlock`` (``text_cross`` = text Q + vision K/V + text output/LN);
the same tensors, regrouped (see ``switchbert.weights.volta``).
"""

from __future__ import annotations

from torch import Tensor, nn

from switchbert.config import ModelConfig
from switchbert.layers.cross_attention import AttentionBlock, FFNBlock
from switchbert.models.dual_stream import DualStreamModel


class CoAttentionBlock(nn.Module):
    """One ViLBERT co-attention block (VOLTA sub-layers 4k .. 4k+3 after the text-only layers).

    Args:
        dim, region_dim: D and D_r.
        num_heads, region_num_heads: heads of the text- and region-query attentions.
        intermediate_size, region_intermediate_size: FFN sizes per stream.
        attention_dropout, hidden_dropout, layer_norm_eps: as BERT.
    """

    def __init__(self, dim: int, region_dim: int, num_heads: int, region_num_heads: int, intermediate_size: int,
                 region_intermediate_size: int, attention_dropout: float, hidden_dropout: float,
                 layer_norm_eps: float) -> None:
        super().__init__()
        a = (attention_dropout, hidden_dropout, layer_norm_eps)
        self.text_cross = AttentionBlock(dim, region_dim, num_heads, *a)
        self.region_cross = AttentionBlock(region_dim, dim, region_num_heads, *a)
        self.text_cross_ffn = FFNBlock(dim, intermediate_size, hidden_dropout, layer_norm_eps)
        self.region_cross_ffn = FFNBlock(region_dim, region_intermediate_size, hidden_dropout, layer_norm_eps)
        self.text_attn = AttentionBlock(dim, dim, num_heads, *a)
        self.region_attn = AttentionBlock(region_dim, region_dim, region_num_heads, *a)
        self.text_ffn = FFNBlock(dim, intermediate_size, hidden_dropout, layer_norm_eps)
        self.region_ffn = FFNBlock(region_dim, region_intermediate_size, hidden_dropout, layer_norm_eps)

    def forward(self, text: Tensor, region: Tensor, text_valid: Tensor, region_valid: Tensor) -> tuple[Tensor, Tensor]:
        """Args:
            text: (B, T, D); region: (B, R, D_r); text_valid: (B, T) bool; region_valid: (B, R) bool.

        Returns:
            (text, region) of the same shapes.
        """
        t = self.text_cross_ffn(self.text_cross(text, region, region_valid))
        r = self.region_cross_ffn(self.region_cross(region, text, text_valid))
        t = self.text_ffn(self.text_attn(t, t, text_valid))
        r = self.region_ffn(self.region_attn(r, r, region_valid))
        return t, r


class ViLBertModel(DualStreamModel):
    """ViLBERT: ``text_layers`` text-only layers, then ``cross_layers`` co-attention blocks."""

    ARCH = "vilbert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        self.cross_layers = nn.ModuleList(
            CoAttentionBlock(c.hidden_size, c.region_hidden_size_, c.num_heads, c.region_num_heads_,
                             c.intermediate_size, c.region_intermediate_size_, c.attention_dropout,
                             c.hidden_dropout, c.layer_norm_eps)
            for _ in range(c.cross_layers)
        )
        self.init_weights()

    def cross_text_slots(self) -> list[tuple[str, str]]:
        return [(f"cross_layers.{j}.text_attn.", f"cross_layers.{j}.text_ffn.") for j in range(len(self.cross_layers))]
