"""Key maps written once: our parameter names -> BERT's, and the pieces VOLTA and HF maps are built from.

A key map is ``{our parameter name: the other checkpoint's key}``. Every importer (``weights/bert.py``
through ``VLModel.bert_key_map``, ``weights/hf.py``, ``weights/volta.py``) composes its map from the
tables here, so each fact (what BERT calls a text embedding, an attention or an FFN module) has one home.

Sub-layer vocabulary: a post-LN BERT layer is an attention sub-layer with modules ``query``, ``key``,
``value``, ``output``, ``norm`` and an FFN sub-layer with ``up``, ``down``, ``norm``. The dual-stream
blocks (``layers/cross_attention.py``: ``AttentionBlock``, ``FFNBlock``) use exactly these names; the
single-stream ``SwitchLayer`` (``layers/transformer.py``) keeps its LayerNorms beside its sub-modules
(``attention_norm``, ``ffn_norm``: the attention's output before the norm is not needed, but ``mid``
after it is, for the Switch-Input Block), so ``SWITCH_LAYER_ATTENTION`` / ``SWITCH_LAYER_FFN`` say where
each vocabulary word lives in it. Both names are part of the saved model-directory format.
"""

from __future__ import annotations

from typing import Mapping

PARAMS = ("weight", "bias")

# -- BERT (HF ``BertModel`` keys, without the ``bert.`` prefix) -------------------------------------------

BERT_TEXT_EMBEDDINGS: dict[str, str] = {
    "embeddings.text.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "embeddings.text.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "embeddings.text.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "embeddings.text.norm.weight": "embeddings.LayerNorm.weight",
    "embeddings.text.norm.bias": "embeddings.LayerNorm.bias",
}
"""Our text embeddings (every model keeps them at ``embeddings.text``) -> BERT's."""

BERT_ATTENTION: dict[str, str] = {"query": "attention.self.query", "key": "attention.self.key",
                                  "value": "attention.self.value", "output": "attention.output.dense",
                                  "norm": "attention.output.LayerNorm"}
"""Attention sub-layer module -> BERT's module inside ``encoder.layer.{i}.``."""

BERT_FFN: dict[str, str] = {"up": "intermediate.dense", "down": "output.dense", "norm": "output.LayerNorm"}
BERT_POOLER: dict[str, str] = {f"text_pooler.dense.{p}": f"pooler.dense.{p}" for p in ("weight", "bias")}
"""BERT's tanh pooler -> ours, for a model with ``pooler="bert"`` (BERT and HF VisualBERT/LXMERT keys)."""
"""FFN sub-layer module -> BERT's module inside ``encoder.layer.{i}.``."""

# -- where the sub-layer vocabulary lives in a SwitchLayer ---------------------------------------------------

SWITCH_LAYER_ATTENTION: dict[str, str] = {"query": "attention.query", "key": "attention.key",
                                          "value": "attention.value", "output": "attention.output",
                                          "norm": "attention_norm"}
SWITCH_LAYER_FFN: dict[str, str] = {"up": "ffn.up", "down": "ffn.down", "norm": "ffn_norm"}


def modules_key_map(names: Mapping[str, str], ours: str = "", theirs: str = "") -> dict[str, str]:
    """``{ours}{module}.{weight,bias}`` -> ``{theirs}{names[module]}.{weight,bias}`` for each module."""
    return {f"{ours}{a}.{p}": f"{theirs}{b}.{p}" for a, b in names.items() for p in PARAMS}


def sublayer_key_map(ours: str, theirs: str, names: Mapping[str, str]) -> dict[str, str]:
    """One ``AttentionBlock`` / ``FFNBlock`` under prefix ``ours`` -> the other layout's sub-layer at ``theirs``.

    ``names`` maps the sub-layer vocabulary to the other layout's modules (e.g. ``BERT_ATTENTION``).
    """
    return modules_key_map(names, ours, theirs)


def switch_layer_key_map(ours: str, attention: tuple[str, Mapping[str, str]],
                         ffn: tuple[str, Mapping[str, str]]) -> dict[str, str]:
    """One ``SwitchLayer`` under prefix ``ours`` -> another layout's attention and FFN sub-layers.

    Args:
        ours: e.g. ``"layers.3."``.
        attention: (prefix, vocabulary -> module) of the other layout's attention sub-layer.
        ffn: the same for its FFN sub-layer (VOLTA numbers it separately from the attention).
    """
    m: dict[str, str] = {}
    for where, (theirs, names) in ((SWITCH_LAYER_ATTENTION, attention), (SWITCH_LAYER_FFN, ffn)):
        m.update({f"{ours}{where[a]}.{p}": f"{theirs}{b}.{p}" for a, b in names.items() for p in PARAMS})
    return m


def bert_layer_key_map(ours: str, bert: str) -> dict[str, str]:
    """One ``SwitchLayer`` (prefix ``ours``) -> one BERT layer (prefix ``bert``, e.g. ``encoder.layer.3.``)."""
    return switch_layer_key_map(ours, (bert, BERT_ATTENTION), (bert, BERT_FFN))


def bert_slot_key_map(attention: str, ffn: str, bert: str) -> dict[str, str]:
    """A dual-stream text slot (an ``AttentionBlock`` at ``attention`` and an ``FFNBlock`` at ``ffn``)
    -> one BERT layer at ``bert``."""
    return {**sublayer_key_map(attention, bert, BERT_ATTENTION), **sublayer_key_map(ffn, bert, BERT_FFN)}


def text_embeddings_key_map(prefix: str = "") -> dict[str, str]:
    """``BERT_TEXT_EMBEDDINGS`` with ``prefix`` before BERT's names (VOLTA keeps BERT's ``bert.``)."""
    return {ours: prefix + theirs for ours, theirs in BERT_TEXT_EMBEDDINGS.items()}
