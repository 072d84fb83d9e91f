"""One way to build a model (``models.build_model``) and one to load a model directory (``load_pretrained``)."""

import pytest
import torch
from safetensors.torch import save_file

import switchbert
from switchbert import presets
from switchbert.models import ExclusiveSourcesError, build_model, load_pretrained, resolve_checkpoint
from switchbert.models.switchbert import SwitchBertModel
from switchbert.weights import keymaps
from switchbert.weights.state_dict import read_state_dict


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_every_public_name_builds_through_build_model():
    assert switchbert.create_model is build_model
    torch.manual_seed(0)
    a = switchbert.create_model("uniter-tiny", top_k=None)
    torch.manual_seed(0)
    b = build_model(presets.get_config("uniter-tiny"))  # a ModelConfig, as the old models.build_model took
    assert a.training and b.training and a.config == b.config
    _same_weights(a, b)
    c = build_model(presets.get_config("switchbert-tiny"), sib=None)
    assert c.config.sib is None and c.sib_switchers is None


def test_init_from_a_run_a_checkpoint_a_directory_or_a_file(tmp_path):
    torch.manual_seed(1)
    source = build_model("uniter-tiny")
    source.save_pretrained(tmp_path / "run" / "last")  # a run directory holding only last/
    source.save_pretrained(tmp_path / "model")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "ddp.pt")
    torch.save({"model_state_dict": source.state_dict()}, tmp_path / "ckpt.bin")
    for init_from in ("run", "run/last", "model", "w.safetensors", "ddp.pt", "ckpt.bin"):
        model = build_model("uniter-tiny", init_from=tmp_path / init_from)
        _same_weights(source, model)
        # A directory fixes the architecture and loads as load_pretrained does (eval mode); a file is
        # loaded into the preset's freshly built model (training mode), as the trainer always did.
        assert model.training == init_from.endswith((".safetensors", ".pt", ".bin")), init_from


def test_init_from_errors_say_what_to_do(tmp_path):
    torch.save({"bert.encoder.layer.0.attention_self.query.weight": torch.zeros(2)}, tmp_path / "volta.bin")
    with pytest.raises(ValueError, match=r"import-checkpoint .*volta.bin DIR --from volta --preset uniter-tiny"):
        build_model("uniter-tiny", init_from=tmp_path / "volta.bin")
    with pytest.raises(ExclusiveSourcesError, match="model.bert_dir and model.init_from are exclusive"):
        build_model("uniter-tiny", bert_dir="x", init_from=tmp_path / "volta.bin")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        build_model("uniter-tiny", init_from=tmp_path / "nothing")


def test_load_pretrained_takes_a_model_dir_a_checkpoint_or_a_run(tmp_path):
    torch.manual_seed(2)
    model = build_model("switchbert-tiny")
    model.save_pretrained(tmp_path / "run" / "best")
    build_model("switchbert-tiny").save_pretrained(tmp_path / "run" / "last")
    assert resolve_checkpoint(tmp_path / "run") == tmp_path / "run" / "best"
    for path in (tmp_path / "run", tmp_path / "run" / "best"):
        loaded = load_pretrained(path)
        assert not loaded.training
        _same_weights(model, loaded)
        _same_weights(model, SwitchBertModel.from_pretrained(path))
    with pytest.raises(FileNotFoundError, match="neither a model directory nor a run"):
        load_pretrained(tmp_path)


def test_read_state_dict_unwraps_training_wrappers(tmp_path):
    state = {"a.weight": torch.ones(2)}
    for name, payload in (("plain.pt", state), ("model.pt", {"model": state, "step": 3}),
                          ("msd.pt", {"model_state_dict": {f"module.{k}": v for k, v in state.items()}})):
        torch.save(payload, tmp_path / name)
        assert read_state_dict(tmp_path / name).keys() == state.keys(), name


def test_bert_key_maps_are_composed_from_one_table():
    single = build_model("switchbert-tiny")
    m = single.bert_key_map(3)
    for ours, bert in keymaps.BERT_TEXT_EMBEDDINGS.items():
        assert m[ours] == bert
    assert m["layers.2.attention_norm.bias"] == "encoder.layer.2.attention.output.LayerNorm.bias"
    assert m["layers.0.ffn_norm.weight"] == "encoder.layer.0.output.LayerNorm.weight"
    dual = build_model("lxmert-tiny")
    d = dual.bert_key_map(3)
    assert d["text_layers.1.attn.norm.weight"] == "encoder.layer.1.attention.output.LayerNorm.weight"
    assert d["cross_layers.0.text_ffn.up.bias"] == "encoder.layer.2.intermediate.dense.bias"
    # A SwitchLayer and a dual-stream text slot take the same BERT tensors, under their own names.
    assert sorted(keymaps.bert_layer_key_map("x.", "b.").values()) == \
        sorted(keymaps.bert_slot_key_map("x.attn.", "x.ffn.", "b.").values())
    params = dict(single.named_parameters())
    assert all(k in params for k in m)
