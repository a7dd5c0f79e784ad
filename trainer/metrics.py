"""The classification metrics, defined once in :mod:`pipeline.stats.metrics` (below both
stages); this name stays for the trainer's imports."""

from pipeline.stats.metrics import (
    SELECT_METRICS,
    accuracy,
    balanced_accuracy,
    classification_metrics,
    macro_f1,
    per_class_counts,
    selection_score,
    uar,
)

__all__ = [
    "SELECT_METRICS",
    "accuracy",
    "balanced_accuracy",
    "classification_metrics",
    "macro_f1",
    "per_class_counts",
    "selection_score",
    "uar",
]
