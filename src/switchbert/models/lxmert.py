"""LXMERT in the controlled setting (Tan & Bansal 2019; docs/method.md §5; VOLTA ``config/ctrl_lxmert.json``).

Dimension legend
    B batch size, T text tokens, R region tokens (IMG + regions), D hidden size (both streams)

    text:    9 text-only BERT layers           regions: 5 region-only layers
    then 5 cross layers, each:
        1. cross-attention, ONE set of weights used in both directions (text queries over regions,
           region queries over text), both computed from the layer's inputs;
        2. self-attention per modality (separate weights);
        3. FFN per modality (separate weights).
    then VOLTA's ReLU poolers on [CLS] and IMG and product fusion (docs/method.md §4).

BERT init (VOLTA ``bert_layer2attn_sublayer``): BERT layers 0-8 -> the text-only layers, 9-11 -> the
text self-attention + FFN of cross layers 0-2; cross layers 3-4's text sub-layers, the whole region
stream and the cross-attention start random (``config.bert_layers=12`` of 14 slots).

Departures: the IMG token (mean feature, whole-image box) is prepended to the regions as for every
model here (docs/method.md §2); the original LXMERT and HF have none. Boxes are 5-d in the controlled setting;
``region_box_dim=4`` reads HF's (x1, y1, x2, y2).
"""

from __future__ import annotations

from torch import Tensor, nn

from switchbert.config import ModelConfig
from switchbert.layers.cross_attention import AttentionBlock, FFNBlock
from switchbert.models.dual_stream import DualStreamModel


class LxmertCrossLayer(nn.Module):
    """One LXMERT cross-modality layer (HF ``LxmertXLayer``).

    Args:
        dim: D (the streams must have one width: the cross-attention is shared).
        num_heads, region_num_heads: heads of the text and region self-attention; the cross-attention
            uses ``num_heads``.
        intermediate_size, region_intermediate_size: FFN sizes per stream.
        attention_dropout, hidden_dropout, layer_norm_eps: as BERT.
    """

    def __init__(self, dim: int, num_heads: int, region_num_heads: int, intermediate_size: int,
                 region_intermediate_size: int, attention_dropout: float, hidden_dropout: float,
                 layer_norm_eps: float) -> None:
        super().__init__()
        a = (attention_dropout, hidden_dropout, layer_norm_eps)
        self.cross = AttentionBlock(dim, dim, num_heads, *a)
        self.text_attn = AttentionBlock(dim, dim, num_heads, *a)
        self.region_attn = AttentionBlock(dim, dim, region_num_heads, *a)
        self.text_ffn = FFNBlock(dim, intermediate_size, hidden_dropout, layer_norm_eps)
        self.region_ffn = FFNBlock(dim, region_intermediate_size, hidden_dropout, layer_norm_eps)

    def forward(self, text: Tensor, region: Tensor, text_valid: Tensor, region_valid: Tensor) -> tuple[Tensor, Tensor]:
        """Args:
            text: (B, T, D); region: (B, R, D); text_valid: (B, T) bool; region_valid: (B, R) bool.

        Returns:
            (text, region) of the same shapes.
        """
        # Both directions read the layer's inputs (not each other's update), as LXMERT and VOLTA do.
        t = self.cross(text, region, region_valid)
        r = self.cross(region, text, text_valid)
        t = self.text_attn(t, t, text_valid)
        r = self.region_attn(r, r, region_valid)
        return self.text_ffn(t), self.region_ffn(r)


class LxmertModel(DualStreamModel):
    """LXMERT: ``text_layers`` + ``region_layers`` single-modality layers, then ``cross_layers``."""

    ARCH = "lxmert"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        self.cross_layers = nn.ModuleList(
            LxmertCrossLayer(c.hidden_size, c.num_heads, c.region_num_heads_, c.intermediate_size,
                             c.region_intermediate_size_, c.attention_dropout, c.hidden_dropout, c.layer_norm_eps)
            for _ in range(c.cross_layers)
        )
        self.init_weights()

    def cross_text_slots(self) -> list[tuple[str, str]]:
        return [(f"cross_layers.{j}.text_attn.", f"cross_layers.{j}.text_ffn.") for j in range(len(self.cross_layers))]
