"""Evaluation metrics. They never touch a model: inputs are arrays, tensors and lists.

All accuracies and recalls are percentages (0-100), like the paper's tables.
"""

from switchbert.metrics.aggregate import (
    PAPER_TABLE3,
    TABLE3_COLUMNS,
    RunSummary,
    Table3Column,
    aggregate_runs,
    canonical_model_name,
    default_columns,
    format_table3,
    load_records,
    split_recipes,
)
from switchbert.metrics.refexp import refexp_accuracy, refexp_accuracy_per_split, refexp_correct
from switchbert.metrics.retrieval import retrieval_ranks, retrieval_recall, score_all_pairs
from switchbert.metrics.vqa import (
    predict_answers,
    vqa_accuracy,
    vqa_accuracy_by_group,
    vqa_question_scores,
    vqa_target_score,
    write_vqa_results,
)

__all__ = [
    "PAPER_TABLE3",
    "TABLE3_COLUMNS",
    "RunSummary",
    "Table3Column",
    "aggregate_runs",
    "canonical_model_name",
    "default_columns",
    "format_table3",
    "load_records",
    "refexp_accuracy",
    "refexp_accuracy_per_split",
    "refexp_correct",
    "retrieval_ranks",
    "retrieval_recall",
    "score_all_pairs",
    "split_recipes",
    "predict_answers",
    "vqa_accuracy",
    "vqa_accuracy_by_group",
    "vqa_question_scores",
    "vqa_target_score",
    "write_vqa_results",
]
