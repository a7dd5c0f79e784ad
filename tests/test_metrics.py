"""Accuracy, UAR and macro F1 against hand-computed cases (docs/evaluation.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.metrics import classification_metrics, macro_f1, selection_score, uar


def test_a_predicted_class_absent_from_the_test_truth_is_not_averaged_in() -> None:
    # Truth holds classes 0 and 1; the model once predicts class 2, which the test set
    # lacks. Recall: class 0 = 1/2, class 1 = 2/2 -> UAR 0.75 (not 0.50 with a zero for 2).
    # F1: class 0: P = 1/1, R = 1/2 -> 2/3; class 1: P = R = 1 -> 1; macro F1 = 5/6.
    m = classification_metrics([0, 0, 1, 1], [0, 2, 1, 1])
    assert m["uar"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(5 / 6)
    assert m["accuracy"] == pytest.approx(0.75)


def test_a_class_never_predicted_counts_with_recall_and_f1_zero() -> None:
    # Truth: 0 0 0 1 1 2; predictions never say 2.
    # Recall: 0 -> 3/3, 1 -> 1/2, 2 -> 0/1: UAR = (1 + 0.5 + 0) / 3 = 0.5.
    # F1: 0: TP 3, FP 1 (the 1 predicted as 0), FN 0 -> 6/7; 1: TP 1, FP 1 (the 2 predicted
    # as 1), FN 1 -> 2/4; 2: TP 0 -> 0. Macro F1 = (6/7 + 1/2 + 0) / 3.
    truth = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 0, 1, 0, 1]
    assert uar(truth, pred) == pytest.approx(0.5)
    assert macro_f1(truth, pred) == pytest.approx((6 / 7 + 0.5) / 3)


def test_both_cases_at_once_under_a_held_out_speaker_like_split() -> None:
    # Classes 0..3 exist in training; this test set holds only 1 and 3. Class 3 is never
    # predicted, class 0 is predicted though absent. Recall: 1 -> 2/3, 3 -> 0/2: UAR 1/3.
    # F1: 1: TP 2, FP 1 (a 3 called 1), FN 1 -> 4/6; 3: 0. Macro F1 = 1/3.
    truth = [1, 1, 1, 3, 3]
    pred = [1, 1, 0, 1, 0]
    m = classification_metrics(truth, pred)
    assert m["uar"] == pytest.approx(1 / 3)
    assert m["macro_f1"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(2 / 5)


def test_metrics_on_random_labels_match_the_formulas_over_truth_classes() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 300)  # classes 0..2
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 5, 300))  # also 3, 4
    m = classification_metrics(y_true, y_pred)
    recalls, f1s = [], []
    for k in (0, 1, 2):
        tp = np.sum((y_pred == k) & (y_true == k))
        fp = np.sum((y_pred == k) & (y_true != k))
        fn = np.sum((y_pred != k) & (y_true == k))
        recalls.append(tp / (tp + fn))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    assert m["uar"] == pytest.approx(np.mean(recalls))
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))


def test_no_clip_gives_nan_and_selection_scores_pick_the_named_metric() -> None:
    assert all(math.isnan(v) for v in classification_metrics([], []).values())
    truth, pred = [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]
    assert selection_score("accuracy", truth, pred) == pytest.approx(0.8)
    assert selection_score("uar", truth, pred) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        selection_score("f1", truth, pred)
