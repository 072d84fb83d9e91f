"""What LXMERT and ViLBERT share: two streams, modality-only layers, then cross layers (docs/method.md §5).

Dimension legend
    B batch size, T text tokens, R region tokens (IMG + regions)
    D text width, D_r region width, P pooler size

    embeddings -> text-only layers (text_layers) | region-only layers (region_layers)
               -> cross layers (cross_layers; the subclass says what one does)
               -> VOLTA poolers on [CLS] and IMG, product fusion (docs/method.md §4)

BERT initialisation (controlled setting, VOLTA ``bert_layer2*_sublayer``): BERT's text embeddings, and
BERT layer i for the i-th "text slot" in order (the text-only layers, then each cross layer's text
self-attention + FFN), up to ``config.bert_layers`` slots. The region stream, the cross-attention
and the poolers start random.
"""

from __future__ import annotations

from torch import nn

from switchbert.batch import Batch
from switchbert.config import ModelConfig
from switchbert.layers.cross_attention import StreamLayer
from switchbert.layers.embeddings import build_embeddings
from switchbert.layers.pooler import build_poolers
from switchbert.models.base import VLModel
from switchbert.outputs import EncoderOutput
from switchbert.weights.keymaps import BERT_POOLER, bert_slot_key_map, text_embeddings_key_map

class DualStreamModel(VLModel):
    """Base of the dual-stream baselines. Subclasses set ``self.cross_layers`` before ``init_weights``.

    A cross layer is called as ``layer(text, region, text_valid, region_valid) -> (text, region)``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        c = config
        D, Dr = c.hidden_size, c.region_hidden_size_
        self.embeddings = build_embeddings(c)
        self.text_layers = nn.ModuleList(
            StreamLayer(D, c.num_heads, c.intermediate_size, c.attention_dropout, c.hidden_dropout, c.layer_norm_eps)
            for _ in range(c.text_layers)
        )
        self.region_layers = nn.ModuleList(
            StreamLayer(Dr, c.region_num_heads_, c.region_intermediate_size_, c.attention_dropout, c.hidden_dropout,
                        c.layer_norm_eps)
            for _ in range(c.region_layers)
        )
        self.text_pooler, self.region_pooler, self.fusion = build_poolers(c, D, Dr)

    def forward(self, batch: Batch, validate: bool = True) -> EncoderOutput:
        """Encodes a batch.

        Args:
            batch: the inputs; the IMG token is added by the embeddings.
            validate: check shapes first.

        Returns:
            EncoderOutput with text_hidden (B, T, D), region_hidden (B, R, D_r) and no routes.
        """
        if validate:
            batch.validate(self.config.region_feat_dim)
        text, region, region_mask = self.embeddings(batch)
        text_mask = batch.text_mask
        for layer in self.text_layers:
            text = layer(text, text_mask)
        for layer in self.region_layers:
            region = layer(region, region_mask)
        for layer in self.cross_layers:
            text, region = layer(text, region, text_mask, region_mask)
        pooled_text = self.text_pooler(text[:, 0])
        pooled_region = None if self.region_pooler is None else self.region_pooler(region[:, 0])
        return EncoderOutput(
            text_hidden=text,
            region_hidden=region,
            text_mask=text_mask,
            region_mask=region_mask,
            pooled_text=pooled_text,
            pooled_region=pooled_region,
            pooled=self.fusion(pooled_text, pooled_region),
            routes=(),
        )

    # -- BERT initialisation ------------------------------------------------------------------------

    def text_slots(self) -> list[tuple[str, str]]:
        """(attention sub-layer prefix, FFN sub-layer prefix) of each text slot, in BERT layer order."""
        slots = [(f"text_layers.{i}.attn.", f"text_layers.{i}.ffn.") for i in range(len(self.text_layers))]
        return slots + self.cross_text_slots()

    def cross_text_slots(self) -> list[tuple[str, str]]:
        """The cross layers' BERT-initialised text sub-layers; the subclass names them."""
        raise NotImplementedError

    def bert_layers_needed(self) -> int:
        """How many BERT layers initialise text slots (``config.bert_layers``, 0 = every slot)."""
        return self.config.bert_layers or len(self.text_slots())

    def bert_key_map(self, num_bert_layers: int) -> dict[str, str]:
        """Our parameter name -> BERT's (without ``bert.``): text embeddings, the first text slots and,
        with ``pooler="bert"``, the pooler."""
        m = text_embeddings_key_map()
        n = min(num_bert_layers, self.bert_layers_needed())
        for i, (attn, ffn) in enumerate(self.text_slots()[:n]):
            m.update(bert_slot_key_map(attn, ffn, f"encoder.layer.{i}."))
        if self.config.pooler == "bert":
            m.update(BERT_POOLER)
        return m

