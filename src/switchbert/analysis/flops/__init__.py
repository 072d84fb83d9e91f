"""Analytic FLOPs of Switch-BERT and its baselines (paper Table 7), one concept per module:

    count      one sample's FLOPs from a ``ModelConfig``: per layer, per attention mode, per architecture;
               the two notions ``paper`` and ``fused``; ``FlopsBreakdown``
    tally      along the routes samples took, summed over samples (``FlopsAccumulator`` -> ``FlopsTally``)
    baselines  the fixed baselines (UNITER, LXMERT, ViLBERT), read from the presets
    training   what the trainer logs on a log step, and a run's totals from that log
    report     Table 7 rows and markdown: a switching model beside the baselines over a run

Every name is re-exported here, so ``from switchbert.analysis.flops import X`` works for all of them.
"""

from switchbert.analysis.flops.baselines import BASELINE_PRESETS, default_baselines, histogram_flops, preset_size
from switchbert.analysis.flops.count import (BOX_DIM, NOTIONS, Count, FlopsBreakdown, attention_pairs, check_notion,
                                             count_with_torch, embedding_flops, expected_flops, ffn_flops,
                                             fixed_flops, linear_flops, lxmert_flops, pooler_flops,
                                             single_stream_flops, switcher_flops, vilbert_flops)
from switchbert.analysis.flops.report import RunFlops, RunFlopsRow, flops_over_run, format_flops
from switchbert.analysis.flops.tally import (ACTIVE_WEIGHT_THRESHOLD, FlopsAccumulator, FlopsTally,
                                             active_path_counts, route_flops)
from switchbert.analysis.flops.training import (FLOPS_LOG_PREFIX, TrainingFlops, flops_from_training_log,
                                                training_flops_log, training_flops_log_for_batch)

__all__ = [
    "ACTIVE_WEIGHT_THRESHOLD", "BASELINE_PRESETS", "BOX_DIM", "Count", "FLOPS_LOG_PREFIX", "FlopsAccumulator",
    "FlopsBreakdown", "FlopsTally", "NOTIONS", "RunFlops", "RunFlopsRow", "TrainingFlops", "active_path_counts",
    "attention_pairs", "check_notion", "count_with_torch", "default_baselines", "embedding_flops", "expected_flops",
    "ffn_flops", "fixed_flops", "flops_from_training_log", "flops_over_run", "format_flops", "histogram_flops",
    "linear_flops", "lxmert_flops", "pooler_flops", "preset_size", "route_flops", "single_stream_flops",
    "switcher_flops", "training_flops_log", "training_flops_log_for_batch", "vilbert_flops",
]
