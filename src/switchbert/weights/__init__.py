"""Checkpoint import: VOLTA controlled-setting state dicts and HF transformers VisualBERT / LXMERT.

    from switchbert.weights import load_hf, load_volta
    model, heads, report = load_volta("volta/lxmert.bin", switchbert.get_config("lxmert-base"))
    print(report.summary())

Every importer works from an explicit key map (ours -> theirs), checks every shape, and returns an
``ImportReport`` listing unused checkpoint keys and parameters left random.
"""

from switchbert.weights.state_dict import ImportReport, read_state_dict
from switchbert.weights.hf import config_from_hf, import_hf, load_hf
from switchbert.weights.volta import import_volta, load_volta, volta_config

__all__ = ["ImportReport", "config_from_hf", "import_hf", "import_volta", "load_hf", "load_volta", "read_state_dict",
           "volta_config"]
