"""Import VOLTA controlled-setting checkpoints (plain PyTorch state dicts; SPEC §9).

VOLTA numbers *sub-layers*: ``bert.encoder.layer.{k}`` is either an attention sub-layer
(``attention_self.{query,key,value}``, ``attention_output.{dense,LayerNorm}``) or an FFN sub-layer
(``intermediate.dense``, ``output.{dense,LayerNorm}``). Text uses the plain names, vision the ``v_``
names. Where VOLTA shares a sub-layer between the streams (every sub-layer of the single-stream
models, LXMERT's cross-attention) the state dict holds the same tensor under both names; we load the
plain one and check that the ``v_`` copy is equal (an alias). Numbering, from ``config/ctrl_*.json``:

    single stream       BERT layer i: attention 2i, FFN 2i+1 (shared: v_ = plain)
    LXMERT              text layer i and region layer i share numbers 2i / 2i+1 (plain / v_);
                        base = 2 * max(text_layers, region_layers); cross layer j at base + 3j:
                        cross-attention (shared), +1 self-attention, +2 FFN
    ViLBERT             text layers as above; base = 2 * max(text_layers, region_layers); block j at
                        base + 4j: co-attention, +1 FFN, +2 self-attention, +3 FFN

ViLBERT's co-attention: VOLTA's text->vision attention uses the text ``query`` with the vision ``v_key``
and ``v_value``; our ``text_cross`` block holds exactly those (and the text output/LayerNorm).

The MLM decoder ``cls.predictions.decoder.weight`` is tied to the word embeddings (an alias). The
pretraining heads (``cls.*``) load into ``PretrainHeads`` when given; otherwise they are reported unused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import Tensor, nn

from switchbert.convert.common import ImportReport, KeyMap, Src, apply_key_map, read_state_dict
from switchbert.layers.cross_attention import sublayer_key_map
from switchbert.models.base import VLModel
from switchbert.models.lxmert import LxmertModel
from switchbert.models.switchbert import SwitchBertModel
from switchbert.models.vilbert import ViLBertModel

L = "bert.encoder.layer."
T_ATTN = {"query": "attention_self.query", "key": "attention_self.key", "value": "attention_self.value",
          "output": "attention_output.dense", "norm": "attention_output.LayerNorm"}
V_ATTN = {"query": "attention_self.v_query", "key": "attention_self.v_key", "value": "attention_self.v_value",
          "output": "attention_output.v_dense", "norm": "attention_output.v_LayerNorm"}
T_FFN = {"up": "intermediate.dense", "down": "output.dense", "norm": "output.LayerNorm"}
V_FFN = {"up": "intermediate.v_dense", "down": "output.v_dense", "norm": "output.v_LayerNorm"}
# Directional co-attention (ViLBERT): each direction's queries from its stream, keys/values from the other.
T_TO_V = {**T_ATTN, "key": "attention_self.v_key", "value": "attention_self.v_value"}
V_TO_T = {**V_ATTN, "key": "attention_self.key", "value": "attention_self.value"}

TEXT_EMB = {
    "embeddings.text.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
    "embeddings.text.position_embeddings.weight": "bert.embeddings.position_embeddings.weight",
    "embeddings.text.token_type_embeddings.weight": "bert.embeddings.token_type_embeddings.weight",
    "embeddings.text.norm.weight": "bert.embeddings.LayerNorm.weight",
    "embeddings.text.norm.bias": "bert.embeddings.LayerNorm.bias",
}
POOLERS = {"text_pooler.dense": "bert.t_pooler.dense", "region_pooler.dense": "bert.v_pooler.dense"}
TIED_DECODER = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}


def _modules(names: dict[str, str]) -> dict[str, str]:
    """``{ours_module: theirs_module}`` -> the same for ``.weight`` and ``.bias``."""
    return {f"{a}.{p}": f"{b}.{p}" for a, b in names.items() for p in ("weight", "bias")}


def _row(i: int):
    def take(t: Tensor) -> Tensor:
        return t[i]

    return take


def _shared_aliases(k: int, attention: bool) -> dict[str, str]:
    """The ``v_`` copies of sub-layer k's plain tensors (a sub-layer VOLTA shares between streams)."""
    v, t = (V_ATTN, T_ATTN) if attention else (V_FFN, T_FFN)
    return {f"{L}{k}.{v[m]}.{p}": f"{L}{k}.{t[m]}.{p}" for m in t for p in ("weight", "bias")}


def embedding_key_map(model: VLModel) -> tuple[KeyMap, dict[str, str]]:
    """Key map and aliases of the model's embedding variant (``config.embedding``)."""
    kind = model.config.embedding
    m: KeyMap = dict(TEXT_EMB)
    aliases: dict[str, str] = {}
    E = "bert.embeddings."
    if kind == "uniter":
        m.update(_modules({"embeddings.region.feat_proj": E + "image_embeddings",
                           "embeddings.region.box_proj": E + "image_location_embeddings",
                           "embeddings.region.feat_norm": E + "image_layer_norm",
                           "embeddings.region.box_norm": E + "image_location_layer_norm",
                           "embeddings.region.norm": E + "v_LayerNorm"}))
        # VOLTA's UNITER reuses the text token-type table for images (one module, two names).
        aliases[E + "image_token_type_embeddings.weight"] = E + "token_type_embeddings.weight"
    elif kind == "visualbert":
        m.update(_modules({"embeddings.feat_proj": E + "projection"}))
        m["embeddings.type_embeddings.weight"] = E + "token_type_embeddings_visual.weight"
        m["embeddings.position_embeddings.weight"] = E + "position_embeddings_visual.weight"
    elif kind == "vlbert":
        # VOLTA's 3-row token-type table: rows 0-1 are BERT's (text), row 2 marks objects.
        m["embeddings.text.token_type_embeddings.weight"] = Src(E + "token_type_embeddings.weight",
                                                                lambda t: t[:2], "rows 0-1")
        m["embeddings.type_embedding"] = Src(E + "token_type_embeddings.weight", _row(2), "row 2")
        m.update(_modules({"embeddings.feat_proj": E + "obj_downsample.1",
                           "embeddings.text_visual_norm": E + "visual_ln_text",
                           "embeddings.object_norm": E + "visual_ln_object"}))
        m["embeddings.mask_feature"] = Src(E + "object_mask_visual_embedding.weight", _row(0))
        m["embeddings.object_embedding"] = Src(E + "object_linguistic_embeddings.weight", _row(0))
        m["embeddings.end_embedding"] = Src(E + "end_embedding.weight", _row(0))
    elif kind == "lxmert":
        V = "bert.v_embeddings."
        m.update(_modules({"embeddings.feat_proj": V + "image_embeddings",
                           "embeddings.box_proj": V + "image_location_embeddings",
                           "embeddings.feat_norm": V + "ImgLayerNorm",
                           "embeddings.box_norm": V + "LocLayerNorm"}))
    elif kind == "vilbert":
        V = "bert.v_embeddings."
        m.update(_modules({"embeddings.feat_proj": V + "image_embeddings",
                           "embeddings.box_proj": V + "image_location_embeddings",
                           "embeddings.norm": V + "LayerNorm"}))
    else:
        raise ValueError(f"ModelConfig.embedding={kind!r}: no VOLTA layout known")
    return m, aliases


def encoder_key_map(model: VLModel) -> tuple[KeyMap, dict[str, str]]:
    """Our parameter -> VOLTA key for the whole encoder, and the aliases VOLTA stores."""
    m, aliases = embedding_key_map(model)
    m.update(_modules(POOLERS))
    c = model.config
    if isinstance(model, SwitchBertModel):
        ours_attn = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
                     "output": "attention.output", "norm": "attention_norm"}
        ours_ffn = {"up": "ffn.up", "down": "ffn.down", "norm": "ffn_norm"}
        for i in range(c.num_layers):
            for mod, ours in ours_attn.items():
                for p in ("weight", "bias"):
                    m[f"layers.{i}.{ours}.{p}"] = f"{L}{2 * i}.{T_ATTN[mod]}.{p}"
            for mod, ours in ours_ffn.items():
                for p in ("weight", "bias"):
                    m[f"layers.{i}.{ours}.{p}"] = f"{L}{2 * i + 1}.{T_FFN[mod]}.{p}"
            aliases.update(_shared_aliases(2 * i, True))
            aliases.update(_shared_aliases(2 * i + 1, False))
        return m, aliases
    if not isinstance(model, (LxmertModel, ViLBertModel)):
        raise ValueError(f"{type(model).__name__}: no VOLTA layout known")
    for i in range(c.text_layers):
        m.update(sublayer_key_map(f"text_layers.{i}.attn.", f"{L}{2 * i}.", T_ATTN))
        m.update(sublayer_key_map(f"text_layers.{i}.ffn.", f"{L}{2 * i + 1}.", T_FFN))
    for i in range(c.region_layers):
        m.update(sublayer_key_map(f"region_layers.{i}.attn.", f"{L}{2 * i}.", V_ATTN))
        m.update(sublayer_key_map(f"region_layers.{i}.ffn.", f"{L}{2 * i + 1}.", V_FFN))
    base = 2 * max(c.text_layers, c.region_layers)
    if isinstance(model, LxmertModel):
        for j in range(c.cross_layers):
            k, x = base + 3 * j, f"cross_layers.{j}."
            m.update(sublayer_key_map(x + "cross.", f"{L}{k}.", T_ATTN))
            aliases.update(_shared_aliases(k, True))  # one cross-attention for both directions
            m.update(sublayer_key_map(x + "text_attn.", f"{L}{k + 1}.", T_ATTN))
            m.update(sublayer_key_map(x + "region_attn.", f"{L}{k + 1}.", V_ATTN))
            m.update(sublayer_key_map(x + "text_ffn.", f"{L}{k + 2}.", T_FFN))
            m.update(sublayer_key_map(x + "region_ffn.", f"{L}{k + 2}.", V_FFN))
    else:
        for j in range(c.cross_layers):
            k, x = base + 4 * j, f"cross_layers.{j}."
            m.update(sublayer_key_map(x + "text_cross.", f"{L}{k}.", T_TO_V))
            m.update(sublayer_key_map(x + "region_cross.", f"{L}{k}.", V_TO_T))
            m.update(sublayer_key_map(x + "text_cross_ffn.", f"{L}{k + 1}.", T_FFN))
            m.update(sublayer_key_map(x + "region_cross_ffn.", f"{L}{k + 1}.", V_FFN))
            m.update(sublayer_key_map(x + "text_attn.", f"{L}{k + 2}.", T_ATTN))
            m.update(sublayer_key_map(x + "region_attn.", f"{L}{k + 2}.", V_ATTN))
            m.update(sublayer_key_map(x + "text_ffn.", f"{L}{k + 3}.", T_FFN))
            m.update(sublayer_key_map(x + "region_ffn.", f"{L}{k + 3}.", V_FFN))
    return m, aliases


def heads_key_map(heads: nn.Module) -> KeyMap:
    """``PretrainHeads`` parameter -> VOLTA ``cls.*`` key (the MRC-KL decoder is VOLTA's target "0")."""
    names = {"mlm.transform.dense": "cls.predictions.transform.dense",
             "mlm.transform.layer_norm": "cls.predictions.transform.LayerNorm",
             "mrc.transform.dense": "cls.imagePredictions.transform.dense",
             "mrc.transform.layer_norm": "cls.imagePredictions.transform.LayerNorm",
             "mrc.decoder": "cls.imagePredictions.decoder_dict.0",
             "itm.classifier": "cls.bi_seq_relationship"}
    m: KeyMap = _modules(names)
    m["mlm.bias"] = "cls.predictions.bias"
    return m


def import_volta(
    model: VLModel,
    source: str | Path | dict[str, Tensor],
    heads: Optional[nn.Module] = None,
) -> ImportReport:
    """Loads a VOLTA checkpoint into ``model`` (and ``heads``) in place.

    Args:
        model: built from the matching preset (``uniter-base``, ``lxmert-base``, ...).
        source: a state-dict file or directory, or the state dict itself.
        heads: optional ``PretrainHeads`` tied to ``model``; without it ``cls.*`` is reported unused.

    Returns:
        The report: loaded, deduplicated aliases, unused keys, parameters left random.
    """
    state = source if isinstance(source, dict) else read_state_dict(source)
    report = ImportReport(source="<state dict>" if isinstance(source, dict) else str(source))
    key_map, aliases = encoder_key_map(model)
    aliases = {**aliases, **TIED_DECODER}
    used = apply_key_map(model, state, key_map, aliases, report)
    if heads is not None:
        used |= apply_key_map(heads, state, heads_key_map(heads), {}, report, prefix="heads.")
    report.unused = sorted(set(state) - used)
    if model.config.embedding == "vlbert":
        report.notes.append("VL-BERT: VOLTA's 3-row token-type table is split: rows 0-1 -> the text table, "
                            "row 2 -> embeddings.type_embedding")
    if isinstance(model, ViLBertModel):
        report.notes.append("ViLBERT: co-attention regrouped per direction: text_cross = (query, v_key, v_value, "
                            "dense, LayerNorm), region_cross = (v_query, key, value, v_dense, v_LayerNorm)")
    return report
