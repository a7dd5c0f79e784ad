"""Classification metrics (DESIGN.md section 6): accuracy, macro F1, UAR, with scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``uar`` (unweighted average recall = macro recall)
    over the classes present in ``y_true`` or ``y_pred``; fractions in [0, 1]."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "uar": float("nan")}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "uar": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }
