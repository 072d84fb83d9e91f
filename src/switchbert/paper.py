"""The numbers the Switch-BERT paper (ECCV 2022) reports, written once.

docs/method.md §10 prints them as a table; ``switchbert report`` (``metrics.PAPER_TABLE3``) puts Table 3
beside a user's results, ``switchbert models`` (``analysis.params``) compares parameter counts with
its "Params" column, and the benchmarks project the paper's pretraining (§6) from a measured speed.
"""

from __future__ import annotations

from dataclasses import dataclass

MeanStd = tuple[float, float]
"""(mean, standard deviation) over the paper's three seeds, in percent."""


@dataclass(frozen=True)
class Table3Row:
    """One model's row of the paper's Table 3 (controlled setting, mean ± std of 3 seeds).

    Attributes:
        name: the model as the paper prints it.
        group: "single-stream", "dual-stream" or "dynamic".
        params_m: the "Params" column, with pretraining heads, in millions.
        vqa_test_dev: VQAv2 test-dev accuracy.
        f30k_ir_r1: Flickr30k image retrieval R@1.
        f30k_tr_r1: Flickr30k text retrieval R@1.
        refcoco_plus: RefCOCO+ accuracy (the paper names no split; we read it as testA).
    """

    name: str
    group: str
    params_m: float
    vqa_test_dev: MeanStd
    f30k_ir_r1: MeanStd
    f30k_tr_r1: MeanStd
    refcoco_plus: MeanStd


TABLE3: dict[str, Table3Row] = {
    # Keyed by canonical model name (metrics.canonical_model_name), in the paper's order.
    "uniter": Table3Row("UNITER", "single-stream", 114.9, (68.8, 0.4), (60.9, 0.7), (76.4, 1.3), (71.9, 0.67)),
    "vlbert": Table3Row("VL-BERT", "single-stream", 116.1, (68.3, 0.31), (57.9, 1.1), (70.9, 1.7), (71.1, 0.23)),
    "visualbert": Table3Row("VisualBERT", "single-stream", 114.9, (68.9, 0.27), (61.1, 1.2), (75.5, 1.8),
                            (69.7, 0.31)),
    "lxmert": Table3Row("LXMERT", "dual-stream", 211.4, (67.1, 0.34), (58.6, 1.4), (74.9, 2.7), (69.8, 0.46)),
    "vilbert": Table3Row("ViLBERT", "dual-stream", 242.1, (68.7, 0.82), (59.8, 0.8), (78.3, 1.6), (70.8, 0.58)),
    "switchbertnopretrain": Table3Row("Switch-BERT, no pretraining", "dynamic", 130.6, (66.7, 0.97), (38.2, 1.7),
                                      (57.3, 2.3), (68.9, 0.82)),
    "switchbert": Table3Row("Switch-BERT", "dynamic", 130.6, (70.7, 0.62), (62.2, 0.9), (78.2, 1.6), (72.8, 0.45)),
}
"""Table 3 of the paper; docs/method.md §10."""

PARAMS_M: dict[str, float] = {
    preset: TABLE3[key].params_m
    for preset, key in (("uniter-base", "uniter"), ("vlbert-base", "vlbert"), ("visualbert-base", "visualbert"),
                        ("lxmert-base", "lxmert"), ("vilbert-base", "vilbert"), ("switchbert-base", "switchbert"))
}
"""Table 3's "Params" column (with pretraining heads, in millions) by the preset that builds the model."""

TOP_ROUTE_SHARE: dict[str, float] = {"refexp": 48.79, "retrieval": 31.09}
"""Percent of the samples that take the most frequent route, by task (RefCOCO+, Flickr30k); docs/method.md §10."""

PRETRAIN_PAIRS = 2_700_000
"""Image-caption pairs of the Conceptual Captions subset the paper pretrains on (docs/method.md §6)."""

PRETRAIN_EPOCHS = 10
"""Pretraining epochs (docs/method.md §6)."""
