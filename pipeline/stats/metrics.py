"""Classification metrics by their definitions (docs/evaluation.md): accuracy, UAR (balanced
accuracy), macro F1. Torch-free, below both stages: the trainer and ``ncore-prep selectivity``
score with these.

Both averaged metrics run over the classes **present in the test truth** (``y_true``):

- UAR (unweighted average recall) = mean over those classes of recall_k = TP_k / n_k;
- macro F1 = mean over the same classes of F1_k = 2 TP_k / (2 TP_k + FP_k + FN_k).

A class that is absent from the test set has no recall (n_k = 0) and is left out, even
when the model predicts it: its wrong predictions already lower the recall (and F1) of the
true classes they were taken from. Averaging over the classes found in the truth *or* the
predictions (scikit-learn's default) would add a zero for such a class and understate
both metrics; this happens under speaker-held-out splits and on small test sets. A class
present in the truth but never predicted counts with recall 0 and F1 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_class_counts(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, tp, fp, fn)`` for the classes present in ``y_true`` (sorted), int arrays."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    classes = np.unique(y_true)
    truth = y_true[None, :] == classes[:, None]  # (K, n)
    pred = y_pred[None, :] == classes[:, None]
    tp = (truth & pred).sum(axis=1)
    fp = (~truth & pred).sum(axis=1)
    fn = (truth & ~pred).sum(axis=1)
    return classes, tp, fp, fn


def balanced_accuracy(
    y_true: Sequence[int] | np.ndarray, correct: Sequence[bool] | np.ndarray
) -> float:
    """Mean recall over the classes present in ``y_true`` (int (n,)), from ``correct``:
    bool (n,), or (n, K) when each clip has K predictions (one per perturbed view), which
    then pool into the clip's class: recall_k = right predictions of class k / (n_k K).
    NaN when ``y_true`` is empty. :func:`uar` is this with one prediction per clip."""
    y = np.asarray(y_true)
    if y.size == 0:
        return float("nan")
    hits = np.asarray(correct, dtype=np.float64).reshape(len(y), -1)
    _, member = np.unique(y, return_inverse=True)
    # Whole numbers summed in any order are exact: right / count is the class's recall.
    right = np.bincount(member.ravel(), weights=hits.sum(axis=1))
    return float(np.mean(right / (np.bincount(member.ravel()) * hits.shape[1])))


def uar(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Unweighted average recall over the classes in ``y_true`` (the balanced accuracy of
    :func:`balanced_accuracy`); NaN when it is empty."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    return balanced_accuracy(y_true, y_true == y_pred)


def macro_f1(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Mean F1 over the classes in ``y_true`` (0 for a class never predicted right)."""
    classes, tp, fp, fn = per_class_counts(y_true, y_pred)
    if classes.size == 0:
        return float("nan")
    return float(np.mean(2 * tp / (2 * tp + fp + fn)))


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Fraction of predictions equal to the truth; NaN when there is none."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == y_pred))


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> dict[str, float]:
    """``accuracy``, ``macro_f1`` and ``uar`` (fractions in [0, 1]; NaN for no clip)."""
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred),
        "uar": uar(y_true, y_pred),
    }


SELECT_METRICS = ("accuracy", "uar")


def selection_score(
    metric: str, y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> float:
    """The validation score that selects the epoch: ``accuracy`` or ``uar``."""
    if metric == "accuracy":
        return accuracy(y_true, y_pred)
    if metric == "uar":
        return uar(y_true, y_pred)
    raise ValueError(f"select metric must be one of {SELECT_METRICS}, got {metric!r}")
