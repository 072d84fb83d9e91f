"""Import HF transformers' ``VisualBertModel`` and ``LxmertModel`` weights (no network; a local directory).

Parity: with imported weights our ``visualbert`` and ``lxmert`` models reproduce HF's encoder hidden
states on the same inputs (tests/test_convert_hf.py, within 1e-5). What differs, and how it is mapped:

- Poolers: HF has a tanh pooler (D -> D) on [CLS]; our models use VOLTA's ReLU poolers (D -> P) on [CLS]
  and IMG by default (docs/method.md §4): HF's ``pooler.*`` is then reported unused and ours start random.
  With ``pooler="bert"`` (``import-checkpoint --pooler bert``) our model pools as HF does and HF's pooler
  is imported into ``text_pooler``.
- IMG token: our models prepend it to the regions (mean feature, whole-image box; docs/method.md §2). HF has
  none; "the same inputs" means HF is given our region sequence, IMG included.
- LXMERT boxes: HF reads ``visual_pos_dim`` numbers (4 in released checkpoints: x1, y1, x2, y2); the
  imported config sets ``region_box_dim`` to it, and our 5-d boxes are cut to their first four.
- LXMERT region stream width equals the text width in HF; so it does here.
- Heads (``load_hf_with_heads``; ``switchbert import-checkpoint --from hf`` writes them to
  ``heads.safetensors``): the MLM head of VisualBERT and LXMERT (``cls.predictions.*``, its decoder tied to
  the word embeddings) and LXMERT's object head (``obj_predict_head.transform`` and ``decoder_dict.obj``,
  into our MRC head with ``num_object_labels`` classes) map exactly (tests/test_weights_hf_heads.py). The
  ITM classifiers (``cls.seq_relationship``) classify HF's tanh-pooled [CLS]: with ``pooler="bert"`` they
  are imported into our ITM head, and the label conventions are applied: HF LXMERT's ``matched_label``
  1 = matched, as ours (rows as they are); HF VisualBERT's ``sentence_image_labels`` 0 = matched
  (1 = a random caption), the reverse (rows swapped, ``ITM_ROWS_SWAPPED``, as the VOLTA import does).
  With the VOLTA poolers they have no counterpart and our ITM head starts random.
- ``--strict`` (``strict_check``) refuses an import (writes nothing, exit 1) when a parameter that has an
  HF counterpart is missing from the checkpoint, or a checkpoint weight that should map is left unused
  (encoder layers beyond config.json's count, another architecture's keys). It passes when what stays
  random is only what has no HF counterpart by design (``NO_HF_SOURCE``: the VOLTA poolers, our ITM head;
  and the MRC head when the checkpoint has no object head), and what is unused is only what has no
  counterpart here by design (``HF_UNUSED_BY_DESIGN``: HF's tanh pooler, its ITM classifier, answer and
  task heads, LXMERT's attribute and feature decoders; the pretraining heads under ``--no-heads``); it
  then prints one line naming those groups. A shape mismatch is always an error, strict or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import Tensor, nn

from switchbert.config import ModelConfig
from switchbert.models import build_model
from switchbert.models.base import VLModel
from switchbert.models.lxmert import LxmertModel
from switchbert.models.switchbert import SwitchBertModel
from switchbert.weights.keymaps import (BERT_ATTENTION, BERT_FFN, BERT_POOLER, bert_layer_key_map, modules_key_map,
                                        sublayer_key_map, text_embeddings_key_map)
from switchbert.weights.state_dict import (ImportReport, KeyMap, Src, apply_key_map, read_config_json,
                                           read_state_dict)

LX_CROSS = {"query": "att.query", "key": "att.key", "value": "att.value", "output": "output.dense",
            "norm": "output.LayerNorm"}
LX_SELF = {"query": "self.query", "key": "self.key", "value": "self.value", "output": "output.dense",
           "norm": "output.LayerNorm"}
HF_PREFIXES = ("visual_bert.", "lxmert.")  # the base model inside HF's pretraining / task models

ITM_ROWS_SWAPPED = {"visual_bert": True, "lxmert": False}
"""Whether an HF model's ITM label convention is the reverse of ours (class 1 = matched): VisualBERT's
``sentence_image_labels`` has 0 = matched; LXMERT's ``matched_label`` has 1 = matched."""

NO_HF_SOURCE: tuple[str, ...] = ("text_pooler.", "region_pooler.", "heads.itm.")
"""Our parameters with no HF counterpart by design: the VOLTA ReLU poolers (HF has one tanh pooler on
[CLS]) and the ITM classifier on them. Fine-tuning trains them. With ``pooler="bert"`` all three have one."""

POOLER_NOTES = {
    "volta": "HF pooler (tanh, D->D on [CLS]) not used: VOLTA ReLU poolers (D->P on [CLS] and IMG) start random",
    "bert": "HF pooler (tanh, D->D on [CLS]) imported into text_pooler: this model pools as HF does (pooler='bert')",
}
"""The pooler note, by ``ModelConfig.pooler``."""

ITM_NOTES = {
    "visual_bert": "ITM cls.seq_relationship imported with its rows swapped: HF VisualBERT's label 0 = matched "
                   "(1 = a random caption), ours class 1 = matched",
    "lxmert": "ITM cls.seq_relationship imported as it is: HF LXMERT's matched_label 1 = matched, as ours",
}
"""When the ITM classifier is imported (``pooler="bert"``)."""

ITM_NOT_IMPORTED = {
    "visual_bert": "ITM cls.seq_relationship not imported: it reads HF's tanh pooler on [CLS] (import with --pooler "
                   "bert to take both); HF VisualBERT's label 0 = matched (1 = random caption) is the reverse of "
                   "ours (class 1 = matched), so its rows are swapped when it is imported",
    "lxmert": "ITM cls.seq_relationship has HF's label 1 = matched, the same convention as ours; it reads HF's tanh "
              "pooler on [CLS] (D), so it is imported only with --pooler bert",
}
"""When it is not (the VOLTA poolers)."""

NOTES = {
    "visual_bert": [
        "regions get our IMG token first (mean feature); HF has none, so parity feeds HF the same sequence",
    ],
    "lxmert": [
        "regions get our IMG token first (mean feature, box 0,0,1,1[,1]); HF has none",
        "boxes: region_box_dim = HF visual_pos_dim; with 4, our 5-d boxes are read as (x1, y1, x2, y2)",
        "answer_head.* not imported",
    ],
}
"""What the import of each HF model type always notes."""


def read_hf_dir(directory: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """HF config dict and state dict (base-model keys: ``visual_bert.``/``lxmert.`` stripped).

    Raises:
        FileNotFoundError: no ``config.json`` or weight file.
        ValueError: a weight file that cannot be read (truncated, corrupt), naming it.
    """
    directory = Path(directory)
    hf = read_config_json(directory)
    try:
        raw = read_state_dict(directory)
    except (FileNotFoundError, ValueError):
        raise  # already name the file
    except Exception as e:  # safetensors' and torch's own errors do not say which file
        name = next((n for n in ("model.safetensors", "pytorch_model.bin") if (directory / n).is_file()), "")
        raise ValueError(f"{directory / name}: cannot read the weights, the file is truncated or corrupt "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    state = {}
    for k, v in raw.items():
        for p in HF_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        state[k] = v
    return hf, state


def config_from_hf(hf: dict[str, Any], base: ModelConfig, source: str = "config.json") -> ModelConfig:
    """``base`` (a preset of the right family) with the sizes of an HF VisualBERT / LXMERT config.

    Args:
        source: the config file, for the errors.

    Raises:
        ValueError: the model type does not match the preset's family, HF uses another activation, or a
            field is missing; each naming ``source``.
    """
    try:
        return _config_from_hf(hf, base, source)
    except KeyError as e:
        raise ValueError(f"{source}: missing field {e.args[0]!r} (an HF {hf.get('model_type', '?')} config has "
                         f"it; was the file edited or written by another library?)") from None
    except (TypeError, ValueError) as e:  # a value ModelConfig refuses (a size of the wrong type)
        if str(e).startswith(source):
            raise
        raise ValueError(f"{source}: {e}") from None


def _config_from_hf(hf: dict[str, Any], base: ModelConfig, source: str) -> ModelConfig:
    kind = hf.get("model_type")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act={hf['hidden_act']!r}: only 'gelu' (exact) is supported")
    common = dict(hidden_size=hf["hidden_size"], num_heads=hf["num_attention_heads"],
                  intermediate_size=hf["intermediate_size"], vocab_size=hf["vocab_size"],
                  max_position=hf["max_position_embeddings"], type_vocab_size=hf["type_vocab_size"],
                  hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                  attention_dropout=hf.get("attention_probs_dropout_prob", 0.1))
    if base.pooler == "bert":  # HF's pooler is D -> D
        common["pooler_size"] = hf["hidden_size"]
    if kind == "visual_bert":
        if base.arch != "switchbert" or base.embedding != "visualbert":
            raise ValueError(f"{source}: HF model_type 'visual_bert' needs a VisualBERT preset (e.g. visualbert-base), "
                             f"got {base.name!r} (arch={base.arch}, embedding={base.embedding})")
        return base.replace(num_layers=hf["num_hidden_layers"], region_feat_dim=hf["visual_embedding_dim"],
                            layer_norm_eps=hf.get("layer_norm_eps", 1e-12), **common)
    if kind == "lxmert":
        if base.arch != "lxmert":
            raise ValueError(f"{source}: HF model_type 'lxmert' needs an LXMERT preset (e.g. lxmert-base), "
                             f"got {base.name!r}")
        text, region, cross = hf["l_layers"], hf["r_layers"], hf["x_layers"]
        return base.replace(text_layers=text, region_layers=region, cross_layers=cross,
                            bert_layers=min(base.bert_layers, text + cross), region_feat_dim=hf["visual_feat_dim"],
                            region_box_dim=hf["visual_pos_dim"], layer_norm_eps=1e-12,  # HF LXMERT hard-codes it
                            region_hidden_size=0, region_num_heads=0, region_intermediate_size=0, **common)
    raise ValueError(f"{source}: HF model_type {kind!r} is not importable; supported: 'visual_bert', 'lxmert'")


def hf_key_map(model: VLModel) -> KeyMap:
    """Our parameter -> HF base-model key, for a VisualBERT (single-stream) or LXMERT model."""
    c = model.config
    m: KeyMap = text_embeddings_key_map()  # HF base-model keys are BERT's
    if isinstance(model, SwitchBertModel) and c.embedding == "visualbert":
        m["embeddings.feat_proj.weight"] = "embeddings.visual_projection.weight"
        m["embeddings.feat_proj.bias"] = "embeddings.visual_projection.bias"
        m["embeddings.type_embeddings.weight"] = "embeddings.visual_token_type_embeddings.weight"
        m["embeddings.position_embeddings.weight"] = "embeddings.visual_position_embeddings.weight"
        for i in range(c.num_layers):
            m.update(bert_layer_key_map(f"layers.{i}.", f"encoder.layer.{i}."))
        return _with_pooler(m, c)
    if isinstance(model, LxmertModel) and c.embedding == "lxmert":
        V = "encoder.visn_fc."
        m.update(sublayer_key_map("embeddings.", V, {"feat_proj": "visn_fc", "feat_norm": "visn_layer_norm",
                                                    "box_proj": "box_fc", "box_norm": "box_layer_norm"}))
        for i in range(c.text_layers):
            m.update(sublayer_key_map(f"text_layers.{i}.attn.", f"encoder.layer.{i}.", BERT_ATTENTION))
            m.update(sublayer_key_map(f"text_layers.{i}.ffn.", f"encoder.layer.{i}.", BERT_FFN))
        for i in range(c.region_layers):
            m.update(sublayer_key_map(f"region_layers.{i}.attn.", f"encoder.r_layers.{i}.", BERT_ATTENTION))
            m.update(sublayer_key_map(f"region_layers.{i}.ffn.", f"encoder.r_layers.{i}.", BERT_FFN))
        for j in range(c.cross_layers):
            x, h = f"cross_layers.{j}.", f"encoder.x_layers.{j}."
            m.update(sublayer_key_map(x + "cross.", h + "visual_attention.", LX_CROSS))
            m.update(sublayer_key_map(x + "text_attn.", h + "lang_self_att.", LX_SELF))
            m.update(sublayer_key_map(x + "region_attn.", h + "visn_self_att.", LX_SELF))
            m.update(sublayer_key_map(x + "text_ffn.", h, {"up": "lang_inter.dense", "down": "lang_output.dense",
                                                           "norm": "lang_output.LayerNorm"}))
            m.update(sublayer_key_map(x + "region_ffn.", h, {"up": "visn_inter.dense", "down": "visn_output.dense",
                                                             "norm": "visn_output.LayerNorm"}))
        return _with_pooler(m, c)
    raise ValueError(f"{type(model).__name__} with embedding {c.embedding!r}: no HF layout "
                     "(VisualBERT and LXMERT only)")


def _with_pooler(m: KeyMap, c: ModelConfig) -> KeyMap:
    """HF's tanh pooler -> ours when the model pools as HF does (``pooler="bert"``)."""
    if c.pooler == "bert":
        m.update(BERT_POOLER)
    return m


def _model_notes(model_type: str, c: ModelConfig) -> list[str]:
    """The notes of an import of ``model_type`` into a model with ``c.pooler``: the pooler, then NOTES;
    LXMERT's ITM convention is noted whether or not its heads are read (VisualBERT's with the heads)."""
    itm = [ITM_NOT_IMPORTED["lxmert"]] if model_type == "lxmert" and c.pooler != "bert" else []
    return [POOLER_NOTES[c.pooler], *NOTES.get(model_type, []), *itm]


def import_hf(model: VLModel, state: dict[str, Tensor], model_type: str, source: str = "<state dict>") -> ImportReport:
    """Loads HF base-model weights into ``model`` in place and reports what was used."""
    report = ImportReport(source=source)
    used = apply_key_map(model, state, hf_key_map(model), {}, report)
    report.unused = sorted(set(state) - used)
    report.notes += _model_notes(model_type, model.config)
    return report


def load_hf(directory: str | Path, base: ModelConfig) -> tuple[VLModel, ImportReport]:
    """Builds our model with the HF checkpoint's sizes (on ``base``'s family) and loads its weights."""
    config_file = str(Path(directory) / "config.json")
    config = config_from_hf(read_config_json(directory), base, config_file)  # before reading the weights
    hf, state = read_hf_dir(directory)
    model = build_model(config)
    return model, import_hf(model, state, hf["model_type"], source=str(directory))


HF_MLM = {"mlm.transform.dense": "cls.predictions.transform.dense",
          "mlm.transform.layer_norm": "cls.predictions.transform.LayerNorm"}
HF_OBJ = {"mrc.transform.dense": "obj_predict_head.transform.dense",
          "mrc.transform.layer_norm": "obj_predict_head.transform.LayerNorm",
          "mrc.decoder": "obj_predict_head.decoder_dict.obj"}
HF_OBJ_DECODER = "obj_predict_head.decoder_dict.obj.weight"
NO_OBJECT_HEAD = "no object head in the checkpoint (HF VisualBERT has no region head): the MRC head starts random"


HF_ITM = "cls.seq_relationship"


def hf_heads_key_map(heads: nn.Module, state: dict[str, Tensor], model_type: str = "lxmert",
                     pooler: str = "volta") -> KeyMap:
    """``PretrainHeads`` parameter -> HF pretraining-head key: MLM always, the object head when the
    checkpoint has one (LXMERT), ITM when the model pools as HF does (``pooler="bert"``), its rows in our
    convention (module docstring)."""
    m: KeyMap = modules_key_map(HF_MLM)
    m["mlm.bias"] = "cls.predictions.bias"
    if HF_OBJ_DECODER in state:
        m.update(modules_key_map(HF_OBJ))
    if pooler == "bert" and f"{HF_ITM}.weight" in state:
        swap = ITM_ROWS_SWAPPED[model_type]
        for p in ("weight", "bias"):
            m[f"itm.classifier.{p}"] = Src(f"{HF_ITM}.{p}", _swap_rows if swap else None,
                                           "rows swapped: HF VisualBERT label 0 = matched" if swap else "")
    return m


def _swap_rows(t: Tensor) -> Tensor:
    return t.flip(0)


def load_hf_with_heads(directory: str | Path, base: ModelConfig) -> tuple[VLModel, Optional[nn.Module], ImportReport]:
    """``load_hf`` and, when the checkpoint has HF's pretraining heads (``cls.predictions.*``: a
    ``VisualBertForPreTraining`` / ``LxmertForPreTraining`` directory), our ``PretrainHeads`` filled from them.

    Returns:
        (model, heads or None, report); the report covers both (heads' names prefixed ``heads.``).
    """
    from switchbert.heads.pretrain import NUM_DETECTOR_CLASSES, pretrain_heads_for

    config_file = str(Path(directory) / "config.json")
    config = config_from_hf(read_config_json(directory), base, config_file)
    hf, state = read_hf_dir(directory)
    model = build_model(config)
    kind = hf["model_type"]
    report = ImportReport(source=str(directory))
    used = apply_key_map(model, state, hf_key_map(model), {}, report)
    heads = None
    if "cls.predictions.bias" in state:
        classes = state[HF_OBJ_DECODER].shape[0] if HF_OBJ_DECODER in state else NUM_DETECTOR_CLASSES
        heads = pretrain_heads_for(model, num_region_classes=int(classes))
        tied = {k: "embeddings.word_embeddings.weight" for k in ("cls.predictions.decoder.weight",) if k in state}
        if "cls.predictions.decoder.bias" in state:
            tied["cls.predictions.decoder.bias"] = "cls.predictions.bias"
        used |= apply_key_map(heads, state, hf_heads_key_map(heads, state, kind, config.pooler), tied, report,
                              prefix="heads.")
        if HF_OBJ_DECODER not in state:
            report.notes.append(NO_OBJECT_HEAD)
        if config.pooler == "bert" and f"{HF_ITM}.weight" in state:
            report.notes.append(ITM_NOTES[kind])
        elif kind == "visual_bert":
            report.notes.append(ITM_NOT_IMPORTED[kind])
    report.unused = sorted(set(state) - used)
    report.notes += _model_notes(kind, config)
    return model, heads, report


def strict_problems(report: ImportReport, pooler: str = "volta") -> tuple[list[str], list[str]]:
    """(parameters missing from the checkpoint, parameters with no HF source by design) among the
    report's uninitialised ones. With ``pooler="bert"`` the pooler and the ITM head have an HF source."""
    design = (NO_HF_SOURCE if pooler != "bert" else ()) + (("heads.mrc.",) if NO_OBJECT_HEAD in report.notes else ())
    missing, by_design = [], []
    for entry in report.uninitialised:
        (by_design if entry.startswith(design) else missing).append(entry)
    return missing, by_design


RANDOM_BY_DESIGN = {"text_pooler.": "the VOLTA poolers", "region_pooler.": "the VOLTA poolers",
                    "heads.itm.": "the ITM head", "heads.mrc.": "the MRC head (the checkpoint has no object head)"}
"""Labels of ``strict_problems``' by-design parameters, by name prefix, for the ``--strict`` line."""

HF_UNUSED_BY_DESIGN: dict[str, str] = {
    "pooler.": "HF's tanh pooler",
    "cls.seq_relationship.": "HF's ITM classifier",
    "answer_head.": "LXMERT's answer head",
    "obj_predict_head.decoder_dict.attr.": "LXMERT's attribute decoder",
    "obj_predict_head.decoder_dict.feat.": "LXMERT's feature regression",
    "cls.weight": "VisualBERT's task classifier",  # VQA, NLVR2, multiple choice: a bare Linear named cls
    "cls.bias": "VisualBERT's task classifier",
    "attention.": "VisualBERT's region-to-phrase attention",
    "embeddings.position_ids": "HF's position-id buffer",  # no weights; files from older HF versions store it
}
"""HF checkpoint keys (base-model prefix stripped) that no parameter here takes, by design: they read
HF's tanh pooler, or are task heads or outputs our models do not have. Every other unused key is a weight
that should have mapped (layers beyond config.json's count, another architecture's checkpoint)."""

HF_HEAD_KEYS = ("cls.predictions.", "obj_predict_head.")
"""The pretraining heads' keys; unused by request under ``--no-heads``."""


@dataclass
class StrictCheck:
    """``--strict`` for an HF import: what stays random and what was left over, each split into what is
    by design and what is not.

    Attributes:
        missing: our parameters with an HF counterpart that the checkpoint lacks (report lines).
        random_by_design: our parameters with no HF counterpart (``NO_HF_SOURCE``; the MRC head
            without an object head); they start random.
        unused: checkpoint keys that should have mapped and did not.
        unused_by_design: checkpoint keys with no counterpart here (``HF_UNUSED_BY_DESIGN``, the heads
            under ``--no-heads``).
    """

    missing: list[str]
    random_by_design: list[str]
    unused: list[str]
    unused_by_design: list[str]

    @property
    def passed(self) -> bool:
        return not self.missing and not self.unused

    def design_groups(self) -> list[str]:
        """The labels of ``random_by_design``, in ``RANDOM_BY_DESIGN``'s order, each once."""
        labels = [label for prefix, label in RANDOM_BY_DESIGN.items()
                  if any(e.startswith(prefix) for e in self.random_by_design)]
        return list(dict.fromkeys(labels))

    def passed_line(self) -> str:
        """"--strict: ... start random by design; fine-tuning trains them" (one line)."""
        groups = self.design_groups()
        design = (f"; {_and(groups)} ({len(self.random_by_design)} parameters) start random by design; "
                  f"fine-tuning trains them") if groups else ""
        unused = ""
        if self.unused_by_design:
            labels = list(dict.fromkeys(_unused_label(k) for k in self.unused_by_design))
            unused = f"; {_and(labels)} ({len(self.unused_by_design)} keys) unused by design"
        return (f"--strict passed: every parameter with an HF counterpart loaded, no checkpoint weight left over"
                f"{unused}{design}")

    def failed_line(self) -> str:
        """Why ``--strict`` refuses, with the affected names grouped (one line)."""
        parts = []
        if self.missing:
            names = [e.split("  (")[0] for e in self.missing]
            parts.append(f"{len(self.missing)} parameters with an HF counterpart are missing from the checkpoint "
                         f"({key_groups(names)})")
        if self.unused:
            parts.append(f"{len(self.unused)} checkpoint weights that should map were not used "
                         f"({key_groups(self.unused)}; does config.json match the weights?)")
        return f"--strict: {' and '.join(parts)}"


def strict_check(report: ImportReport, heads: bool = True, pooler: str = "volta") -> StrictCheck:
    """Sorts an HF import's report for ``--strict``.

    Args:
        report: from ``load_hf`` / ``load_hf_with_heads``.
        heads: whether the pretraining heads were asked for (False under ``--no-heads``: their keys are
            then unused by request).
        pooler: the imported model's ``pooler``; with "bert" HF's pooler and ITM classifier must map.
    """
    missing, by_design = strict_problems(report, pooler)
    hf_pooled = ("pooler.", f"{HF_ITM}.")  # read HF's tanh pooler: they map when the model pools as HF does
    unused_design = tuple(k for k in HF_UNUSED_BY_DESIGN if pooler != "bert" or not k.startswith(hf_pooled))
    unused_design += () if heads else HF_HEAD_KEYS + ((f"{HF_ITM}.",) if pooler == "bert" else ())
    unused, unused_by_design = [], []
    for k in report.unused:
        (unused_by_design if k.startswith(unused_design) else unused).append(k)
    return StrictCheck(missing, by_design, unused, unused_by_design)


def key_groups(keys: list[str], limit: int = 4) -> str:
    """Dotted names grouped for a message: up to the first layer index (``encoder.layer.2.*``), else
    the module (``pooler.dense.*``); at most ``limit`` groups, then ``...``."""
    groups: list[str] = []
    for k in keys:
        parts = k.split(".")
        cut = next((i + 1 for i, p in enumerate(parts) if p.isdigit()), max(len(parts) - 1, 1))
        g = ".".join(parts[:cut]) + (".*" if cut < len(parts) else "")
        if g not in groups:
            groups.append(g)
    return ", ".join(groups[:limit]) + (", ..." if len(groups) > limit else "")


def _unused_label(key: str) -> str:
    for prefix, label in HF_UNUSED_BY_DESIGN.items():
        if key.startswith(prefix):
            return label
    return "the pretraining heads (--no-heads)"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
