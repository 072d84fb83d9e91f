"""Import VOLTA controlled-setting checkpoints (plain PyTorch state dicts; docs/method.md §9).

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
pretraining heads (``cls.*``) load into ``PretrainHeads`` (``load_volta`` builds them by default);
ITM's two rows are swapped, since VOLTA's label 0 means "matched" and ours class 1 does.

Where our computation would differ from VOLTA's, ``volta_config`` sets the config value that makes it
VOLTA's (VL-BERT's text visual vector, the VL-BERT region head without LayerNorm), and the report's
notes list every such choice (docs/baselines.md lists them all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import Tensor, nn

from switchbert.config import ModelConfig
from switchbert.heads.pretrain import NUM_DETECTOR_CLASSES, PretrainHeads, pretrain_heads_for
from switchbert.models import build_model
from switchbert.models.base import VLModel
from switchbert.models.lxmert import LxmertModel
from switchbert.models.switchbert import SwitchBertModel
from switchbert.models.vilbert import ViLBertModel
from switchbert.weights.keymaps import (modules_key_map, sublayer_key_map, switch_layer_key_map,
                                        text_embeddings_key_map)
from switchbert.weights.state_dict import ImportReport, KeyMap, Src, apply_key_map, read_state_dict

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

POOLERS = {"text_pooler.dense": "bert.t_pooler.dense", "region_pooler.dense": "bert.v_pooler.dense"}
TIED_DECODER = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}


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
    m: KeyMap = text_embeddings_key_map("bert.")
    aliases: dict[str, str] = {}
    E = "bert.embeddings."
    if kind == "uniter":
        m.update(modules_key_map({"embeddings.region.feat_proj": E + "image_embeddings",
                                  "embeddings.region.box_proj": E + "image_location_embeddings",
                                  "embeddings.region.feat_norm": E + "image_layer_norm",
                                  "embeddings.region.box_norm": E + "image_location_layer_norm",
                                  "embeddings.region.norm": E + "v_LayerNorm"}))
        # VOLTA's UNITER reuses the text token-type table for images (one module, two names).
        aliases[E + "image_token_type_embeddings.weight"] = E + "token_type_embeddings.weight"
    elif kind == "visualbert":
        m.update(modules_key_map({"embeddings.feat_proj": E + "projection"}))
        m["embeddings.type_embeddings.weight"] = E + "token_type_embeddings_visual.weight"
        m["embeddings.position_embeddings.weight"] = E + "position_embeddings_visual.weight"
    elif kind == "vlbert":
        # VOLTA's 3-row token-type table: rows 0-1 are BERT's (text), row 2 marks objects.
        m["embeddings.text.token_type_embeddings.weight"] = Src(E + "token_type_embeddings.weight",
                                                                lambda t: t[:2], "rows 0-1")
        m["embeddings.type_embedding"] = Src(E + "token_type_embeddings.weight", _row(2), "row 2")
        m.update(modules_key_map({"embeddings.feat_proj": E + "obj_downsample.1",
                                  "embeddings.text_visual_norm": E + "visual_ln_text",
                                  "embeddings.object_norm": E + "visual_ln_object"}))
        m["embeddings.mask_feature"] = Src(E + "object_mask_visual_embedding.weight", _row(0))
        m["embeddings.object_embedding"] = Src(E + "object_linguistic_embeddings.weight", _row(0))
        m["embeddings.end_embedding"] = Src(E + "end_embedding.weight", _row(0))
    elif kind == "lxmert":
        V = "bert.v_embeddings."
        m.update(modules_key_map({"embeddings.feat_proj": V + "image_embeddings",
                                  "embeddings.box_proj": V + "image_location_embeddings",
                                  "embeddings.feat_norm": V + "ImgLayerNorm",
                                  "embeddings.box_norm": V + "LocLayerNorm"}))
    elif kind == "vilbert":
        V = "bert.v_embeddings."
        m.update(modules_key_map({"embeddings.feat_proj": V + "image_embeddings",
                                  "embeddings.box_proj": V + "image_location_embeddings",
                                  "embeddings.norm": V + "LayerNorm"}))
    else:
        raise ValueError(f"ModelConfig.embedding={kind!r}: no VOLTA layout known")
    return m, aliases


def encoder_key_map(model: VLModel) -> tuple[KeyMap, dict[str, str]]:
    """Our parameter -> VOLTA key for the whole encoder, and the aliases VOLTA stores."""
    m, aliases = embedding_key_map(model)
    m.update(modules_key_map(POOLERS))
    c = model.config
    if isinstance(model, SwitchBertModel):
        for i in range(c.num_layers):
            m.update(switch_layer_key_map(f"layers.{i}.", (f"{L}{2 * i}.", T_ATTN), (f"{L}{2 * i + 1}.", T_FFN)))
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


MRC_NORM = "cls.imagePredictions.transform.LayerNorm.weight"
MRC_DECODER = "cls.imagePredictions.decoder_dict.0.weight"


def _swap_rows(t: Tensor) -> Tensor:
    return t.flip(0)


def heads_key_map(heads: nn.Module) -> KeyMap:
    """``PretrainHeads`` parameter -> VOLTA ``cls.*`` key (the MRC-KL decoder is VOLTA's target "0").

    ITM: VOLTA's label 0 means matched (1 = the caption was replaced); our class 1 means matched, so
    the two rows of ``cls.bi_seq_relationship`` (weight and bias) are swapped. A head built without
    the MRC LayerNorm (``mrc_head_norm=False``) takes no LayerNorm keys.
    """
    names = {"mlm.transform.dense": "cls.predictions.transform.dense",
             "mlm.transform.layer_norm": "cls.predictions.transform.LayerNorm",
             "mrc.transform.dense": "cls.imagePredictions.transform.dense",
             "mrc.transform.layer_norm": "cls.imagePredictions.transform.LayerNorm",
             "mrc.decoder": "cls.imagePredictions.decoder_dict.0"}
    m: KeyMap = modules_key_map(names)
    if not isinstance(heads.mrc.transform.layer_norm, nn.LayerNorm):
        del m["mrc.transform.layer_norm.weight"], m["mrc.transform.layer_norm.bias"]
    m["mlm.bias"] = "cls.predictions.bias"
    for p in ("weight", "bias"):
        m[f"itm.classifier.{p}"] = Src(f"cls.bi_seq_relationship.{p}", _swap_rows,
                                       "rows swapped: VOLTA label 0 = matched, ours class 1 = matched")
    return m


def volta_config(state: dict[str, Tensor], base: ModelConfig) -> ModelConfig:
    """``base`` with what a VOLTA checkpoint fixes beyond the preset's sizes.

    - VL-BERT: ``vlbert_text_visual="last"``, VOLTA's choice of the visual vector for text tokens.
    - ``mrc_head_norm``: whether the checkpoint's region head has a LayerNorm (VOLTA's VL-BERT has
      none, ``image_head_ln: false``); a checkpoint without any region head keeps ``base``'s.
    """
    config = base
    if base.embedding == "vlbert":
        config = config.replace(vlbert_text_visual="last")
    if MRC_DECODER in state:
        config = config.replace(mrc_head_norm=MRC_NORM in state)
    return config


def load_volta(
    source: str | Path | dict[str, Tensor],
    base: ModelConfig,
    with_heads: bool = True,
) -> tuple[VLModel, Optional[PretrainHeads], ImportReport]:
    """Builds our model for a VOLTA checkpoint on ``base``'s architecture and loads it, heads included.

    Args:
        source: a state-dict file or directory, or the state dict itself.
        base: the preset of the checkpoint's family and sizes (e.g. ``get_config("vlbert-base")``).
        with_heads: also build ``PretrainHeads`` (MLM, MRC, ITM) and load ``cls.*`` into them.

    Returns:
        (model, heads or None, report). The heads fit ``model`` as training and evaluation build
        them (``pretrain_heads_for``); MRC has as many classes as the checkpoint's decoder. A
        checkpoint without ``cls.*`` keys (fine-tuned) gives None.
    """
    state = source if isinstance(source, dict) else read_state_dict(source)
    name = "<state dict>" if isinstance(source, dict) else str(source)
    model = build_model(volta_config(state, base))
    heads = None
    has_heads = any(k.startswith("cls.") for k in state)
    if with_heads and has_heads:
        num_classes = state[MRC_DECODER].shape[0] if MRC_DECODER in state else NUM_DETECTOR_CLASSES
        heads = pretrain_heads_for(model, num_region_classes=int(num_classes))
    report = import_volta(model, state, heads=heads, source_name=name)
    if with_heads and not has_heads:
        report.notes.append("no pretraining heads in the checkpoint (no cls.* keys: a fine-tuned checkpoint?); "
                            "only the encoder was imported")
    return model, heads, report


def departure_notes(model: VLModel, heads: Optional[nn.Module], state: dict[str, Tensor]) -> list[str]:
    """What the report says about how our model's computation relates to VOLTA's for this import."""
    c = model.config
    notes = ["IMG token: our models build it as VOLTA's feature reader does (mean of the real region features, "
             "box (0, 0, 1, 1, 1)) and put it first (VOLTA add_global_imgfeat='first')",
             "token types: our text tokens always use type 0 (VOLTA's pretraining and tasks pass segment ids 0)",
             "fusion: product of the two ReLU poolers (VOLTA fusion_method='mul', every ctrl_* config); "
             "a checkpoint trained with another fusion_method is not reproduced",
             "attention: padded keys are excluded exactly; VOLTA adds -10000 to their scores (the same in "
             "float32: every query has a real key)",
             "outputs at padding positions are not defined here and differ from VOLTA's; real tokens and "
             "regions agree"]
    if c.embedding == "vlbert":
        notes.append("VL-BERT: VOLTA's 3-row token-type table is split: rows 0-1 -> the text table, "
                     "row 2 -> embeddings.type_embedding")
        if c.vlbert_text_visual == "last":
            notes.append("VL-BERT: text tokens add the LAST region slot's visual vector, as VOLTA's code does "
                         "(vlbert_text_visual='last'; our own default is the IMG token). As in VOLTA, that slot "
                         "is a padding slot for a sample with fewer regions than the batch is padded to, so "
                         "such a sample's output depends on its batch mates (VOLTA's behaviour, kept for parity)")
        notes.append("VL-BERT: NOT reproduced (VOLTA's code, not the model): VOLTA shifts text position ids by the "
                     "number of region slots in every sample from the batch's shortest text on (an in-place add "
                     "on an expanded arange), so its longer texts get other positions in a mixed-length batch. "
                     "Ours are 0..T-1 always: equal to VOLTA for a batch of one or texts of one length")
        if c.vlbert_text_visual != "last":
            notes.append("VL-BERT: WARNING this model adds the IMG token's visual vector to text tokens "
                         "(vlbert_text_visual='img'); VOLTA adds the last slot's, so outputs differ from VOLTA. "
                         "Build the model with volta_config()/load_volta() to reproduce VOLTA")
    if isinstance(model, ViLBertModel):
        notes.append("ViLBERT: co-attention regrouped per direction: text_cross = (query, v_key, v_value, "
                     "dense, LayerNorm), region_cross = (v_query, key, value, v_dense, v_LayerNorm)")
    if heads is not None:
        notes.append("ITM: cls.bi_seq_relationship rows swapped (VOLTA label 0 = matched; ours class 1 = matched), "
                     "so softmax(itm)[:, 1] is the match probability, = VOLTA's softmax[:, 0]")
        if MRC_DECODER in state and MRC_NORM not in state:
            if isinstance(heads.mrc.transform.layer_norm, nn.LayerNorm):
                notes.append("MRC: the checkpoint's region head has no LayerNorm (VOLTA image_head_ln: false) "
                             "but these heads have one: build them with mrc_head_norm=False")
            else:
                notes.append("MRC: no LayerNorm in the region head transform, as in the checkpoint "
                             "(VOLTA image_head_ln: false; mrc_head_norm=False)")
        other = sorted({k.split(".")[3] for k in state if k.startswith("cls.imagePredictions.decoder_dict.")} - {"0"})
        if other:
            notes.append(f"MRC: VOLTA visual targets {other} have no head here (only target 0, MRC-KL); unused")
    elif any(k.startswith("cls.") for k in state):
        notes.append("pretraining heads (cls.*) not imported: no heads given")
    return notes


def import_volta(
    model: VLModel,
    source: str | Path | dict[str, Tensor],
    heads: Optional[nn.Module] = None,
    source_name: Optional[str] = None,
) -> ImportReport:
    """Loads a VOLTA checkpoint into ``model`` (and ``heads``) in place.

    Prefer ``load_volta``, which also builds the model and heads the checkpoint's architecture needs
    (``volta_config``). Given a model directly, a VL-BERT model with ``vlbert_text_visual="img"``
    loads but does not compute what VOLTA does; the report says so.

    Args:
        model: built from the matching preset (``uniter-base``, ``lxmert-base``, ...).
        source: a state-dict file or directory, or the state dict itself.
        heads: optional ``PretrainHeads`` tied to ``model`` (``pretrain_heads_for(model)``); without
            it ``cls.*`` is reported unused.
        source_name: what the report calls the source (default: the path, or "<state dict>").

    Returns:
        The report: loaded, deduplicated aliases, unused keys, parameters left random, departures.
    """
    state = source if isinstance(source, dict) else read_state_dict(source)
    if source_name is None:
        source_name = "<state dict>" if isinstance(source, dict) else str(source)
    report = ImportReport(source=source_name)
    key_map, aliases = encoder_key_map(model)
    aliases = {**aliases, **TIED_DECODER}
    used = apply_key_map(model, state, key_map, aliases, report)
    if heads is not None:
        used |= apply_key_map(heads, state, heads_key_map(heads), {}, report, prefix="heads.")
    report.unused = sorted(set(state) - used)
    report.notes += departure_notes(model, heads, state)
    return report
